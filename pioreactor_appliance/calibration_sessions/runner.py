"""Moves sessions through their protocol's steps, stores them, and runs action steps as tasks.

The deliberate difference from the reference: a step that drives hardware is
never waited for inside a request. Entering it submits a task and the answer
comes at once, on the action step with the task in its metadata; when the task
ends, the session moves itself on (or stays, showing the error, for a retry).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import ApiError
from ..tasks import SUCCEEDED, Task, TaskRegistry, result_url_path
from ..timestamps import iso_utc
from .protocol import Bench, Protocol
from .session import (
    ABORT_MESSAGE,
    ABORTED,
    ACTION_ERROR,
    COMPLETE,
    IN_PROGRESS,
    NAMESPACE,
    PENDING_TASK,
    Session,
)
from .steps import Action, InputError, Step

log = Logger()
View = dict[str, Any]  # {"session": ..., "step": ...}


def bad_input(message: str, remediation: str) -> ApiError:
    return ApiError(400, message, remediation=remediation)


class CalibrationSessions:
    def __init__(
        self, bench: Bench, tasks: TaskRegistry, protocols: list[Protocol]
    ) -> None:
        self._bench = bench
        self._tasks = tasks
        self._protocols = {(p.target_device, p.protocol_name): p for p in protocols}
        self._listing = [p.listing() for p in protocols]

    def listing(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._listing)

    def _now(self) -> str:
        return iso_utc(self._bench.clock.seconds())

    # --- storage -----------------------------------------------------------------

    def _load(self, session_id: str) -> Session | None:
        stored = self._bench.cache.get(NAMESPACE, session_id)
        return (
            None
            if not isinstance(stored, dict)
            else Session.from_json(copy.deepcopy(stored))
        )

    async def _save(self, session: Session) -> None:
        session.updated_at = self._now()
        await self._bench.cache.set(NAMESPACE, session.session_id, session.as_json())

    async def _existing(self, session_id: str) -> Session:
        session = self._load(session_id)
        if session is None:
            raise ApiError(
                404,
                "Calibration session not found.",
                cause=f"No calibration session {session_id!r} on {self._bench.unit}.",
                remediation="Start one with POST /unit_api/calibrations/sessions.",
            )
        if session.pending_task and not self._task(session.pending_task):
            # The task is gone (the unit restarted, or it was pruned): the run did not finish, so offer it again.
            self._ended(
                session, self._step(session), "the unit restarted before it finished"
            )
            await self._save(session)
        return session

    def _task(self, task_id: str) -> Task | None:
        try:
            return self._tasks.get(task_id)
        except ApiError:
            return None

    # --- rendering ---------------------------------------------------------------

    def _protocol(self, session: Session) -> Protocol:
        protocol = self._protocols.get((session.target_device, session.protocol_name))
        if protocol is None:
            raise ApiError(
                409,
                "Calibration protocol no longer available.",
                cause=f"{session.protocol_name} for {session.target_device} is not offered by this unit's configuration any more.",
                remediation="Abort this session; GET /unit_api/calibration_protocols lists what can run.",
            )
        return protocol

    def _step(self, session: Session) -> Step:
        if session.status == COMPLETE:
            return Step(
                "complete",
                "result",
                "Calibration complete!",
                "The calibration is saved and active.",
                metadata={"result": session.result},
            )
        if session.status != IN_PROGRESS:
            return Step("", "info", "Protocol ended", session.error or "")
        return self._protocol(session).step(session)

    def view(self, session: Session) -> View:
        step = self._step(session)
        rendered = step.as_json()
        if session.status == IN_PROGRESS and step.action is not None:
            metadata = rendered["metadata"] = dict(rendered["metadata"])
            task = self._task(session.pending_task) if session.pending_task else None
            if task is not None:
                metadata["task"] = {
                    "task_id": task.task_id,
                    "result_url_path": result_url_path(task.task_id),
                    "status": task.status,
                }
            if ACTION_ERROR in session.data:
                metadata["error"] = session.data[ACTION_ERROR]
                rendered["body"] += (
                    f" The last attempt failed: {session.data[ACTION_ERROR]} Continue to try again."
                )
        return {"session": session.as_json(), "step": rendered}

    # --- actions -----------------------------------------------------------------

    def _check(self, protocol: Protocol) -> None:
        problem = protocol.precondition(self._bench)
        if problem:
            raise bad_input(problem, "Stop the job named, then retry.")

    def _start(self, session: Session, action: Action) -> None:
        """Submit the step's hardware work; the session shows the task until ``_landed`` moves it on."""
        task = self._tasks.submit(lambda: action.run(self._bench))
        session.data[PENDING_TASK] = task.task_id
        session.data.pop(ACTION_ERROR, None)
        assert task.deferred is not None
        task.deferred.addBoth(
            lambda _: Deferred.fromCoroutine(
                self._landed(session.session_id, task, action)
            )
        )

    def _ended(self, session: Session, step: Step, why: str) -> None:
        session.data.pop(PENDING_TASK, None)
        label = step.action.label if step.action else step.title
        session.data[ACTION_ERROR] = f"{label} failed: {why}"

    async def _landed(self, session_id: str, task: Task, action: Action) -> None:
        session = self._load(session_id)
        if (
            session is None
            or session.status != IN_PROGRESS
            or session.pending_task != task.task_id
        ):
            return  # aborted meanwhile: the abort already put the hardware in its safe state
        try:
            if task.status == SUCCEEDED:
                session.data.pop(PENDING_TASK)
                session.step_id = action.done(session, task.result)
            else:
                self._ended(
                    session,
                    self._step(session),
                    task.error.error if task.error else "unknown error",
                )
        except Exception as e:
            log.failure(
                "Calibration session {session_id} could not take its action's result",
                session_id=session_id,
            )
            self._ended(session, self._step(session), str(e))
        try:
            await self._save(session)
        except Exception:
            log.failure(
                "Calibration session {session_id} could not be saved",
                session_id=session_id,
            )

    # --- the routes' operations ----------------------------------------------------

    async def create(self, target_device: str, protocol_name: str) -> View:
        protocol = self._protocols.get((target_device, protocol_name))
        if protocol is None:
            raise bad_input(
                f"Unknown protocol '{protocol_name}' for target device '{target_device}'.",
                "GET /unit_api/calibration_protocols lists the protocols of this unit.",
            )
        self._check(protocol)
        now = self._now()
        session = Session(
            uuid.uuid4().hex,
            protocol_name,
            target_device,
            IN_PROGRESS,
            "intro",
            protocol.start_data(self._bench),
            now,
            now,
        )
        await self._save(session)
        return self.view(session)

    async def get(self, session_id: str) -> View:
        return self.view(await self._existing(session_id))

    async def inputs(self, session_id: str, inputs: dict[str, Any]) -> View:
        """Take a step's inputs. A finished session, or one whose action is running, stays as it is."""
        session = await self._existing(session_id)
        if session.status != IN_PROGRESS or session.pending_task:
            return self.view(session)
        protocol = self._protocol(session)
        step = protocol.step(session)
        if step.action is not None:  # the last run failed: this is the retry
            self._check(protocol)
            self._start(session, step.action)
        else:
            try:
                values = step.read(inputs)
                next_step = await protocol.advance(session, values, self._bench)
            except InputError as e:
                raise bad_input(
                    str(e), "Correct the input and send it again."
                ) from None
            if next_step is not None and session.status == IN_PROGRESS:
                session.step_id = next_step
                following = protocol.step(session)
                if following.action is not None:
                    self._check(protocol)
                    self._start(session, following.action)
        await self._save(session)
        return self.view(session)

    async def abort(self, session_id: str) -> View:
        """Mark the session aborted (whatever its state, as the reference), and stop a running action.

        The cleanup hook runs only when an action was running: otherwise nothing
        the session started is on, and the hardware may be a job's by now.
        """
        session = await self._existing(session_id)
        pending = self._task(session.pending_task) if session.pending_task else None
        session.data.pop(PENDING_TASK, None)
        session.status, session.error = ABORTED, ABORT_MESSAGE
        await self._save(session)
        if (
            pending is not None
            and pending.deferred is not None
            and not pending.finished
        ):
            pending.deferred.cancel()
        protocol = self._protocols.get((session.target_device, session.protocol_name))
        # Only a running action has hardware on.
        if pending is not None and protocol is not None:
            try:
                await protocol.cleanup(self._bench)
            except Exception as e:
                session.error = f"{ABORT_MESSAGE} Cleanup failed: {e}"
                await self._save(session)
        return self.view(session)
