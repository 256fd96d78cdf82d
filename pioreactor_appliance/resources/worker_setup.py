"""``POST /api/workers/setup``: adding a worker as visible steps, one addition at a time (leader).

The reference ran ``pio workers add`` over SSH and reported "not found after 118 s"
whatever went wrong. Here each step is short and bounded, and a failure's
``cause`` starts with the step's name: resolve -> reachable -> version-compatible
-> confirmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from attrs import define, field
from klein import Klein
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from .. import __version__
from ..config import SHARED_NAME, ConfigError, with_setting, write_checked
from ..errors import ApiError
from ..fanout import FanOut
from ..store import workers as store
from ..store.config_histories import add_version
from ..store.database import Database
from ..timestamps import iso_utc
from .names import UNIT_NAME_SCHEMA, valid_unit_name
from .routing import route
from .workers import ipv4_or_none


def _ipv4(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and ipv4_or_none(value) is None:
        raise ValueError(f"{attribute.name}: {value!r} is not an IPv4 address (e.g. 192.168.1.20); leave it out to use the name")


@define
class WorkerSetup:
    """The reference's body: ``version`` and ``model`` are the worker's model version and name."""

    name: str = field(validator=valid_unit_name, metadata=UNIT_NAME_SCHEMA)
    version: str
    model: str
    ipv4_address: str | None = field(default=None, validator=_ipv4)


class WorkerAdded(TypedDict):
    msg: str


def _step_failed(step: str, name: str, detail: str, remediation: str) -> ApiError:
    return ApiError(404, f"Worker {name} could not be added: the {step} step failed.", cause=f"{step}: {detail}", remediation=remediation)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _save_address(path: Path, unit: str, address: str) -> str:
    """Blocking: config.ini with ``[cluster.addresses] unit=address``, written atomically; its new text."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    text = with_setting(text, "cluster.addresses", unit, address)
    write_checked(path, text)
    return text


class WorkerSetupApi:
    app = Klein()

    def __init__(
        self, db: Database, fanout: FanOut, clock: IReactorTime, data_dir: Path, writing: DeferredLock, step_timeout: float
    ) -> None:
        """``writing`` is the lock of the config routes; ``step_timeout`` bounds each network step."""
        self._db = db
        self._fanout = fanout
        self._clock = clock
        self._data_dir = data_dir
        self._writing = writing
        self._step_timeout = step_timeout
        self._adding = False

    @route(app, "/api/workers/setup", ["POST"], body=WorkerSetup, returns=WorkerAdded, expensive=True)
    async def setup(self, request: IRequest, body: WorkerSetup) -> WorkerAdded:
        """Add a worker once it answers with its name and a compatible version; 404 names the step that failed.

        Steps: resolve (``ipv4_address``, else ``[cluster.addresses]``, else ``<name>.local``), reachable
        (``/unit_api/health`` names it), version-compatible (same major.minor as the leader), confirmed
        (registered as by ``PUT /api/workers``; a given address saved in config.ini). 409 while another runs.
        """
        if self._adding:
            raise ApiError(
                409,
                "A worker is being added already.",
                cause="One worker setup runs at a time.",
                remediation="Try again when it ends.",
            )
        self._adding = True
        try:
            ipv4 = ipv4_or_none(body.ipv4_address)
            address = ipv4 or self._fanout.addresses.address(body.name)
            await self._reachable(body.name, address)
            await self._compatible(body.name, address)
            await self._confirm(body, ipv4)
        finally:
            self._adding = False
        return {"msg": f"Worker {body.name} added successfully."}

    async def _get(self, step: str, name: str, address: str, path: str) -> Any:
        envelope = await self._fanout.request_at(name, address, path, timeout=self._step_timeout)
        if not envelope["ok"]:
            raise _step_failed(
                step,
                name,
                f"no answer from {address} to {path}: {envelope['error']['message']}",
                f"Check that {name} is on, runs the appliance and is on this network; give its ipv4_address if its name does not resolve.",
            )
        return envelope["value"]

    async def _reachable(self, name: str, address: str) -> None:
        health = await self._get("reachable", name, address, "/unit_api/health")
        said = health.get("pioreactor_unit") if isinstance(health, dict) else None
        if said != name:
            raise _step_failed(
                "reachable", name, f"the unit at {address} says it is {said}", f"Check the address, or add that unit as {said}."
            )

    async def _compatible(self, name: str, address: str) -> None:
        answer = await self._get("version-compatible", name, address, "/unit_api/versions/app")
        version = answer.get("version") if isinstance(answer, dict) else None
        if not isinstance(version, str) or _major_minor(version) != _major_minor(__version__):
            raise _step_failed(
                "version-compatible",
                name,
                f"{name} runs {version}, the leader {__version__}: their major.minor versions differ",
                f"Update the worker (or the leader) so both run {'.'.join(_major_minor(__version__))}.x, then add it again.",
            )

    async def _confirm(self, body: WorkerSetup, ipv4: str | None) -> None:
        now = iso_utc(self._clock.seconds())
        await self._db.run(store.add_worker, body.name, body.model, body.version, now)
        if ipv4 is None:
            return
        try:
            text = await self._writing.run(deferToThread, _save_address, self._data_dir / SHARED_NAME, body.name, ipv4)
        except (OSError, ConfigError) as e:
            raise _step_failed(
                "confirmed", body.name, f"{body.name} is registered, but config.ini could not be written: {e}", "Check the leader's storage."
            ) from None
        self._fanout.addresses.remember(body.name, ipv4)
        await self._db.run(add_version, SHARED_NAME, now, text)
