"""Owned thread pools stop with the reactor, so a service left running cannot keep its process alive."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pioreactor_appliance
from pioreactor_appliance.threads import OwnedThreadPool


class RecordingReactor:
    """The three reactor methods the pool uses; ``callFromThread`` runs at once, from whichever thread."""

    def __init__(self) -> None:
        self.triggers: dict[int, tuple[str, str, Any]] = {}
        self._next = 0

    def addSystemEventTrigger(self, phase: str, event: str, fn: Any) -> int:
        self._next += 1
        self.triggers[self._next] = (phase, event, fn)
        return self._next

    def removeSystemEventTrigger(self, trigger: int) -> None:
        if trigger not in self.triggers:
            raise ValueError("no such trigger")
        del self.triggers[trigger]

    def callFromThread(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def shut_down(self) -> None:
        for phase, event, fn in list(self.triggers.values()):
            if (phase, event) == ("during", "shutdown"):
                fn()


class OwnedThreadPoolTests(SynchronousTestCase):
    def started_pool(self) -> tuple[RecordingReactor, OwnedThreadPool]:
        fake = RecordingReactor()
        pool = OwnedThreadPool(fake, 1, 1, "test-pool")
        pool.start()
        self.addCleanup(lambda: pool.stop() if pool.started else None)
        return fake, pool

    def test_a_pool_never_stopped_stops_at_reactor_shutdown_after_its_queue(self) -> None:
        fake, pool = self.started_pool()
        done: list[int] = []
        release = threading.Event()
        pool.callInThread(release.wait, 5)
        pool.callInThread(done.append, 1)
        [(phase, event, _)] = fake.triggers.values()
        self.assertEqual((phase, event), ("during", "shutdown"))
        release.set()
        fake.shut_down()
        self.assertEqual((pool.started, pool.joined, done), (False, True, [1]))
        self.assertEqual([t for t in threading.enumerate() if t.name.startswith("PoolThread-test-pool")], [])

    def test_stopping_forgets_the_shutdown_trigger(self) -> None:
        fake, pool = self.started_pool()
        pool.stop()
        self.assertEqual(fake.triggers, {})
        fake.shut_down()  # nothing left to stop, and no double stop

    def test_stop_from_another_thread_forgets_the_trigger_through_the_reactor_thread(self) -> None:
        fake, pool = self.started_pool()
        calls: list[str] = []
        original = fake.callFromThread
        fake.callFromThread = lambda fn, *a: (calls.append(threading.current_thread().name), original(fn, *a))  # type: ignore[method-assign]
        stopper = threading.Thread(target=pool.stop, name="stopper")
        stopper.start()
        stopper.join(5)
        self.assertEqual((calls, fake.triggers, pool.started), (["stopper"], {}, False))

    def test_a_trigger_already_fired_is_not_an_error(self) -> None:
        fake, pool = self.started_pool()
        trigger = next(iter(fake.triggers))
        del fake.triggers[trigger]  # as if the reactor were already firing it
        pool.stop()
        self.assertFalse(pool.started)


UNSTOPPED = """
import sys
from pathlib import Path
from twisted.internet import reactor
from pioreactor_appliance.hardware.connection import PigpioConnection
from pioreactor_appliance.jobs.unit_state import PersistentCache
from pioreactor_appliance.store.database import Database

data = Path(sys.argv[1])
Database(data / "pioreactor.sqlite", reactor).startService()
PigpioConnection(reactor, "127.0.0.1", 1).startService()
PersistentCache(data / "local_cache.json", reactor).set("a", "b", 1)
# Neither service is ever stopped: only the reactor is.
reactor.callLater(0.5, reactor.stop)
reactor.run()
"""


class Exited(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[BaseException] = Deferred()
        self.err = b""

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)  # a Failure passed to callback() would errback


class ProcessExitTests(TestCase):
    timeout = 60

    async def test_a_process_whose_services_were_never_stopped_still_exits(self) -> None:
        data = Path(self.mktemp())
        data.mkdir()
        protocol = Exited()
        process = reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-c", UNSTOPPED, str(data)],
            env={**os.environ, "PYTHONPATH": str(Path(pioreactor_appliance.__file__).parents[1])},
        )
        watchdog = reactor.callLater(40, process.signalProcess, "KILL")
        ended = await protocol.ended
        if watchdog.active():
            watchdog.cancel()
        self.assertIsInstance(ended, ProcessDone, protocol.err.decode(errors="replace"))
