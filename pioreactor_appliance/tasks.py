"""Long operations as tasks keyed by id, polled at ``/unit_api/task_results/<id>``.

A task is a Deferred the registry watches. Work starts on the next reactor
turn, so the 202 that names the task always leaves before the task can end.
Finished results are kept for a bounded count and age; a running task is
never dropped.
"""

from __future__ import annotations

import inspect
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Literal, NotRequired, TypedDict

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import ApiError

PENDING: Final = "pending"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
TaskStatus = Literal["pending", "running", "succeeded", "failed"]


class Accepted(TypedDict):
    """The 202 body of a route that answers with a task: where to poll for its result."""

    unit: str
    task_id: str
    result_url_path: str
    status: TaskStatus


class TaskResult(TypedDict):
    """A task as a poller sees it: ``result`` once it succeeded, ``error`` and ``cause`` once it failed."""

    task_id: str
    result_url_path: str
    status: TaskStatus
    progress: NotRequired[Any]
    result: NotRequired[Any]
    error: NotRequired[str]
    cause: NotRequired[str]
    remediation: NotRequired[str]


def result_url_path(task_id: str) -> str:
    return f"/unit_api/task_results/{task_id}"


@define
class Task:
    task_id: str
    created_at: float
    status: TaskStatus = PENDING
    result: Any = None
    error: ApiError | None = None
    finished_at: float | None = None
    deferred: Deferred | None = field(default=None, repr=False)
    progress: Callable[[], Any] | None = field(default=None, repr=False)  # how far a running task is, for pollers

    @property
    def finished(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)

    def body(self) -> TaskResult:
        """The ``task_results`` body: what a poller sees now."""
        body: TaskResult = {
            "task_id": self.task_id,
            "result_url_path": result_url_path(self.task_id),
            "status": self.status,
        }
        if self.status == RUNNING and self.progress is not None:
            body["progress"] = self.progress()
        if self.status == SUCCEEDED:
            body["result"] = self.result
        elif self.status == FAILED and self.error is not None:
            body["error"] = self.error.error
            body["cause"] = self.error.cause or self.error.error
            if self.error.remediation:
                body["remediation"] = self.error.remediation
        return body


def _as_api_error(failure: Failure) -> ApiError:
    if failure.check(ApiError):
        return failure.value
    if failure.check(CancelledError):
        return ApiError(500, "The task was cancelled.", cause="The unit stopped before the task finished.", remediation="Retry once the unit is back.")
    message = str(failure.value) or failure.type.__name__
    return ApiError(500, message, cause="The task failed with an exception.", remediation="Check the unit's log and retry.")


class TaskRegistry(Service):
    """Tasks of this unit, by id."""

    log = Logger()

    def __init__(self, clock: IReactorTime, unit: str, max_count: int, max_age: float) -> None:
        self._clock = clock
        self.unit = unit
        self._max_count = max_count
        self._max_age = max_age
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._pruner = LoopingCall(self.prune)
        self._pruner.clock = clock

    def startService(self) -> None:
        super().startService()
        self._pruner.start(max(1.0, self._max_age / 10), now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._pruner.running:
            self._pruner.stop()
        for task in list(self._tasks.values()):
            if task.deferred is not None and not task.finished:
                task.deferred.cancel()

    def submit(self, work: Callable[[], Any], progress: Callable[[], Any] | None = None) -> Task:
        """Run ``work`` (returning a value, a Deferred or a coroutine) as a new task.

        ``progress``, if given, is called on the reactor thread whenever a poller asks
        while the task runs; its JSON value is the body's ``progress``.
        """
        task = Task(task_id=uuid.uuid4().hex, created_at=self._clock.seconds(), progress=progress)
        self._tasks[task.task_id] = task
        started: Deferred[Any] = Deferred()

        def start(_: object) -> Deferred[Any]:
            task.status = RUNNING

            def call() -> Any:
                result = work()
                return Deferred.fromCoroutine(result) if inspect.iscoroutine(result) else result

            return maybeDeferred(call)

        started.addCallback(start)
        started.addCallbacks(self._succeeded, self._failed, callbackArgs=(task,), errbackArgs=(task,))
        task.deferred = started
        self._clock.callLater(0, started.callback, None)
        self.prune()
        return task

    def _succeeded(self, result: Any, task: Task) -> None:
        task.status, task.result, task.finished_at = SUCCEEDED, result, self._clock.seconds()

    def _failed(self, failure: Failure, task: Task) -> None:
        if not failure.check(ApiError, CancelledError):
            self.log.failure("Task {task_id} failed", failure, task_id=task.task_id)
        task.status, task.error, task.finished_at = FAILED, _as_api_error(failure), self._clock.seconds()

    def get(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise ApiError(
                404,
                "Task not found.",
                cause=f"No task with id {task_id!r} is known to {self.unit}; results are kept for "
                f"{int(self._max_age)} s and the last {self._max_count} tasks, and are lost on restart.",
                remediation="Check the task id from the 202 response, or run the request again.",
            ) from None

    def accepted(self, task: Task) -> Accepted:
        """The 202 body an async route answers with."""
        return {"unit": self.unit, "task_id": task.task_id, "result_url_path": result_url_path(task.task_id), "status": task.status}

    def prune(self) -> None:
        now = self._clock.seconds()
        finished = [t for t in self._tasks.values() if t.finished]
        excess = len(finished) - self._max_count
        for task in finished:
            assert task.finished_at is not None
            if excess > 0 or now - task.finished_at > self._max_age:
                del self._tasks[task.task_id]
                excess -= 1
