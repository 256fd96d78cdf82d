"""One calibration session as the reference stores it (persistent cache, namespace ``calibration_sessions``)."""

from __future__ import annotations

from typing import Any, Final, Literal

from attrs import asdict, define, field

NAMESPACE: Final = "calibration_sessions"
IN_PROGRESS: Final = "in_progress"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
ABORTED: Final = "aborted"
Status = Literal["in_progress", "complete", "failed", "aborted"]
ABORT_MESSAGE: Final = "Calibration aborted by user."
# Keys of ``data`` the runner keeps: the task an action step is running, and why the last run failed.
PENDING_TASK: Final = "pending_task_id"
ACTION_ERROR: Final = "action_error"


@define
class Session:
    """Field order is the reference's JSON order."""

    session_id: str
    protocol_name: str
    target_device: str
    status: Status
    step_id: str
    data: dict[str, Any] = field(factory=dict)
    created_at: str = ""
    updated_at: str = ""
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Session:
        return cls(**stored)

    @property
    def pending_task(self) -> str | None:
        return self.data.get(PENDING_TASK)

    def complete(self, result: dict[str, Any]) -> None:
        self.status, self.step_id, self.result = COMPLETE, "complete", result
