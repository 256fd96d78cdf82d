"""Thread pools that a service owns and that never outlive the reactor.

A pool's threads are not daemons: one left started (a service whose stop
failed, or was never called) keeps the process from exiting at all, so a
twistd that was asked to stop, or a test run, would hang forever. Each pool
therefore also stops when the reactor shuts down, after finishing what was
queued on it (the database's last writes among them).
"""

from __future__ import annotations

from typing import Any

from twisted.python.threadpool import ThreadPool


class OwnedThreadPool(ThreadPool):
    def __init__(self, reactor: Any, minthreads: int, maxthreads: int, name: str) -> None:
        super().__init__(minthreads, maxthreads, name=name)
        self._reactor = reactor
        self._shutdown_trigger: Any = None

    def start(self) -> None:
        super().start()
        if self._shutdown_trigger is None:
            self._shutdown_trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._stop_at_shutdown)

    def stop(self) -> None:
        """Finish what is queued and join the threads; callable from any thread (the database stops its
        readers from its writer thread)."""
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None:
            self._reactor.callFromThread(self._forget, trigger)
        super().stop()

    def _forget(self, trigger: Any) -> None:
        try:
            self._reactor.removeSystemEventTrigger(trigger)
        except ValueError:
            pass  # the reactor is shutting down and has already fired it

    def _stop_at_shutdown(self) -> None:
        self._shutdown_trigger = None
        if self.started:
            super().stop()
