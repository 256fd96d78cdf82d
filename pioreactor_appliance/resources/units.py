"""``/api/units/<unit>/...``: leader routes answered by the units themselves, through the fan-out.

``<unit>`` is one registered unit or ``$broadcast``, which here means the
whole cluster: the leader and every worker, inactive ones included (the
reference's rule for the ``/api/units`` family).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from ..fanout import FanOut
from ..store.database import Database
from ..tasks import Accepted, TaskRegistry
from .routing import Reply, route
from .targets import cluster_targets
from .task_results import run_as_task


class UnitsApi:
    app = Klein()

    def __init__(self, db: Database, tasks: TaskRegistry, fanout: FanOut, leader_hostname: str) -> None:
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._leader = leader_hostname

    async def _targets(self, unit: str) -> list[str]:
        return await self._db.read(cluster_targets, unit, self._leader)

    def _fan_out(self, method: str, units: list[str], path: str) -> Reply:
        return run_as_task(self._tasks, lambda: self._fanout.request(method, units, path))

    @route(app, "/api/units/<unit>/versions/app", ["GET"], returns=Accepted, status=202, expensive=True)
    async def versions(self, request: IRequest, unit: str) -> Any:
        """Each unit's appliance version; the task result maps each unit to its envelope."""
        return self._fan_out("GET", await self._targets(unit), "/unit_api/versions/app")
