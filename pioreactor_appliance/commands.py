"""Running a configured command off the reactor thread: an argument list, a timeout, bounded output.

Commands are spawned with ``reactor.spawnProcess`` and an argument list, never
through a shell, so a value a request supplied stays one literal argument.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

DEFAULT_MAX_OUTPUT = 16 * 1024


@frozen
class Result:
    """How a command ended: its exit code (None if a signal ended it) and the tail of its output."""

    exit_code: int | None
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def last_lines(self, count: int = 5) -> str:
        return "\n".join(self.output.strip().splitlines()[-count:])


class _Collector(ProcessProtocol):
    """Keeps the last ``limit`` bytes of stdout and stderr together, in arrival order."""

    def __init__(self, limit: int, done: Deferred[Result]) -> None:
        self._limit = limit
        self._output = bytearray()
        self._done = done
        self.timed_out = False
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def _keep(self, data: bytes) -> None:
        self._output += data
        if len(self._output) > self._limit:
            del self._output[: len(self._output) - self._limit]

    def outReceived(self, data: bytes) -> None:
        self._keep(data)

    def errReceived(self, data: bytes) -> None:
        self._keep(data)

    def kill(self) -> None:
        self.timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        self._done.callback(
            Result(code, self._output.decode("utf-8", "replace"), self.timed_out)
        )


class CommandRunner:
    """Runs argument lists as child processes of the reactor."""

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        max_output: int = DEFAULT_MAX_OUTPUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._max_output = max_output
        self._env = dict(os.environ if env is None else env)

    def run(self, argv: Sequence[str], timeout: float) -> Deferred[Result]:
        """Start ``argv`` (the first word found on PATH); fire with its Result, killing it after ``timeout`` s.

        A command that cannot start fires a failure (OSError).
        """
        if not argv:
            raise ValueError("an empty command")
        done: Deferred[Result] = Deferred()
        collector = _Collector(self._max_output, done)
        args: list[Any] = [str(a) for a in argv]
        self._reactor.spawnProcess(collector, args[0], args, env=self._env)
        collector.timer = self._clock.callLater(timeout, collector.kill)
        return done
