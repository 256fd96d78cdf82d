"""The leader's UI helpers: chart and settings descriptors, and whether the Pi runs its own access point.

Descriptors are YAML files shipped in ``pioreactor_appliance/ui`` with the
data directory's ``ui/`` and ``plugins/ui/`` read after them (a later file with
the same key wins), as for the jobs' descriptors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..descriptors import ChartDescriptor, Descriptors, SettingsDescriptor
from ..jobs.bioreactor import VARIABLES, Bioreactor
from .caching import cache_for
from .routing import route

ACCESS_POINT_MAX_AGE = 10000  # the reference's: the access point changes only with a reboot


class AccessPoint(TypedDict):
    active: bool


class LeaderUiApi:
    app = Klein()

    def __init__(self, descriptors: Descriptors, bioreactor: Bioreactor, access_point_flag: Path) -> None:
        self._descriptors = descriptors
        self._bioreactor = bioreactor
        self._access_point_flag = access_point_flag

    @route(app, "/api/charts/descriptors", ["GET"], returns=list[ChartDescriptor])
    async def charts(self, request: IRequest) -> list[dict[str, Any]]:
        """The overview's charts; a file that does not fit the schema is skipped and logged."""
        return await self._descriptors.charts()

    @route(app, "/api/settings/descriptors", ["GET"], returns=list[SettingsDescriptor])
    async def settings(self, request: IRequest) -> list[dict[str, Any]]:
        """The settings collections; the ``bioreactor`` one carries this model's defaults and limits."""
        canonical = {
            name: {"default": self._bioreactor.default(name), "min": 0.0, "max": self._bioreactor.maximum(name)}
            for name in VARIABLES
        }
        return await self._descriptors.settings(canonical)

    @route(app, "/api/local_access_point", ["GET"], returns=AccessPoint)
    async def local_access_point(self, request: IRequest) -> AccessPoint:
        """Whether the leader serves its own Wi-Fi access point (the image's flag file is present)."""
        cache_for(request, ACCESS_POINT_MAX_AGE)
        return {"active": await deferToThread(os.path.isfile, self._access_point_flag)}
