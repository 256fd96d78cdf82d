"""``/unit_api/health`` and ``/unit_api/versions/app``: is this unit up, and what does it run."""

from __future__ import annotations

from typing import TypedDict

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from .. import __version__
from ..timestamps import iso_utc
from .routing import route


class Health(TypedDict):
    status: str
    pioreactor_unit: str
    utc_time: str


class AppVersion(TypedDict):
    version: str


class UnitInfoApi:
    app = Klein()

    def __init__(self, unit: str, clock: IReactorTime) -> None:
        self._unit = unit
        self._clock = clock

    @route(app, "/unit_api/health", ["GET"], returns=Health, public=True)
    def health(self, request: IRequest) -> Health:
        """The unit answers, with its name and its clock (to spot skew across the cluster)."""
        request.setHeader(b"cache-control", b"no-store")
        return {"status": "ok", "pioreactor_unit": self._unit, "utc_time": iso_utc(self._clock.seconds())}

    @route(app, "/unit_api/versions/app", ["GET"], returns=AppVersion)
    def app_version(self, request: IRequest) -> AppVersion:
        """The appliance version this unit runs."""
        return {"version": __version__}
