"""``/api/units/<unit>/...``: leader routes answered by the units themselves, through the fan-out.

``<unit>`` is one registered unit or ``$broadcast``, which here means the
whole cluster: the leader and every worker, inactive ones included (the
reference's rule for the ``/api/units`` family).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..fanout import FanOut
from ..store.database import Database
from ..store.workers import cluster_units
from ..tasks import Accepted, TaskRegistry
from .names import BROADCAST
from .routing import Reply, route


class UnitsApi:
    app = Klein()

    def __init__(self, db: Database, tasks: TaskRegistry, fanout: FanOut, leader_hostname: str) -> None:
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._leader = leader_hostname

    async def _targets(self, unit: str) -> list[str]:
        units = await self._db.run(cluster_units, self._leader)
        if unit == BROADCAST:
            return units
        if unit not in units:
            raise ApiError(
                400,
                f"Unknown Pioreactor unit: {unit}",
                cause=f"{unit!r} is neither the leader nor a registered worker.",
                remediation="Use a name from GET /api/units, or $broadcast for every unit.",
            )
        return [unit]

    def _fan_out(self, method: str, units: list[str], path: str) -> Reply:
        task = self._tasks.submit(lambda: self._fanout.request(method, units, path))
        return Reply(self._tasks.accepted(task), code=202)

    @route(app, "/api/units/<unit>/versions/app", ["GET"], returns=Accepted, status=202, expensive=True)
    async def versions(self, request: IRequest, unit: str) -> Any:
        """Each unit's appliance version; the task result maps each unit to its envelope."""
        return self._fan_out("GET", await self._targets(unit), "/unit_api/versions/app")
