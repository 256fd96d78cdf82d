"""Actions: short-lived jobs (pumps, LED changes) that do one thing and stop.

They keep the job contract the reference's ``managed_lifecycle`` gives them:
``$state`` goes init, ready, disconnected; a ``$state/set`` of ``disconnected``
cuts them short; their last will says ``lost``.
"""

from __future__ import annotations

from typing import Any

from .base import Job


class Action(Job):
    """Fill in ``act``; the run request succeeds at ``ready``, the action then runs to its end and stops."""

    def act(self) -> Any:
        """The action itself; may return a Deferred. Stopping the job cancels its timers."""
        raise NotImplementedError

    def on_ready(self) -> None:
        d = self.run_guarded(self.act)
        d.addCallback(lambda _: self.stop() if not self.stopped else None)
