"""``/api/units/<unit>/plugins/...``: each unit's plugins, listed, installed and uninstalled through the leader.

``$broadcast`` is the whole cluster, the leader included (the leader reaches its
own ``/unit_api`` like any unit). Each unit runs pip itself, with its own
allow-list; the leader checks the name first, and refuses every install while
its data directory holds ``DISALLOW_UI_INSTALLS``. Installing or removing a
plugin can change what a unit lists and which calibration protocols it offers,
so both are forgotten by the leader's cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..fanout import FanOut
from ..store.database import Database
from ..tasks import Accepted, TaskRegistry
from .leader_cache import CALIBRATION_PROTOCOLS, PLUGINS, LeaderCache
from .plugins import check_installs_allowed, requested_plugin
from .routing import Reply, route
from .shapes import CommandBody
from .targets import cluster_targets
from .task_results import run_as_task

CHANGED = (PLUGINS, CALIBRATION_PROTOCOLS)


class UnitPluginsApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        tasks: TaskRegistry,
        fanout: FanOut,
        cache: LeaderCache,
        data_dir: Path,
        leader_hostname: str,
        pip_timeout: float,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._cache = cache
        self._data_dir = data_dir
        self._leader = leader_hostname
        self._pip_timeout = pip_timeout

    async def _targets(self, unit: str) -> list[str]:
        return await self._db.read(cluster_targets, unit, self._leader)

    @route(app, "/api/units/<unit>/plugins/installed", ["GET"], returns=Accepted, status=202)
    async def installed(self, request: IRequest, unit: str) -> Reply:
        """Each unit's installed plugins (reused for 10 s)."""
        units = await self._targets(unit)
        path = "/unit_api/plugins/installed"
        return run_as_task(self._tasks, lambda: self._cache.read(PLUGINS, units, lambda missing: self._fanout.request("GET", missing, path)))

    async def _pip(self, unit: str, body: CommandBody, action: str) -> Reply:
        """Check here, then have each unit run pip; its envelope says how that went."""
        requested_plugin(body, action)
        units = await self._targets(unit)
        await deferToThread(check_installs_allowed, self._data_dir)
        self._cache.invalidate(units, CHANGED)
        json = attrs.asdict(body)

        async def work() -> dict[str, dict[str, Any]]:
            try:
                # a unit's pip may take its whole [plugins] timeout; the unit's task is followed that long
                return await self._fanout.request("POST", units, f"/unit_api/plugins/{action}", json=json, timeout=self._pip_timeout + 10)
            finally:
                self._cache.invalidate(units, CHANGED)

        return run_as_task(self._tasks, work)

    @route(
        app,
        "/api/units/<unit>/plugins/install",
        ["POST", "PATCH"],
        body=CommandBody,
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def install(self, request: IRequest, body: CommandBody, unit: str) -> Reply:
        """Install one plugin on each unit: body {"args": [name], "options": {"version"|"source"}}."""
        return await self._pip(unit, body, "install")

    @route(
        app,
        "/api/units/<unit>/plugins/uninstall",
        ["POST", "PATCH"],
        body=CommandBody,
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def uninstall(self, request: IRequest, body: CommandBody, unit: str) -> Reply:
        """Uninstall one plugin on each unit: body {"args": [name]}."""
        return await self._pip(unit, body, "uninstall")
