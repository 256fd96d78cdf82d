"""``/unit_api/task_results/<task_id>``: 202 while a task is pending or running, 200 once it is done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from ..tasks import TaskRegistry, TaskResult
from .routing import Reply, route


def run_as_task(tasks: TaskRegistry, work: Callable[[], Any], progress: Callable[[], Any] | None = None) -> Reply:
    """Start ``work`` as a task and answer 202 with where to poll for its result (and its ``progress``)."""
    return Reply(tasks.accepted(tasks.submit(work, progress)), code=202)


class TaskResultsApi:
    app = Klein()

    def __init__(self, tasks: TaskRegistry) -> None:
        self._tasks = tasks

    @route(app, "/unit_api/task_results/<task_id>", ["GET"], returns={200: TaskResult, 202: TaskResult}, by_capability=True)
    def task_result(self, request: IRequest, task_id: str) -> Reply:
        """Poll a task; failed tasks answer 200 with the error, as the unit seed shows."""
        task = self._tasks.get(task_id)
        request.setHeader(b"cache-control", b"no-store")
        return Reply(task.body(), code=200 if task.finished else 202)
