"""A real mosquitto on a free loopback port, for integration tests.

``broker = await start_mosquitto(reactor, self)`` in an ``async def test_...``;
the broker is stopped when the test ends. ``broker.stop()`` / ``broker.start()``
restart it on the same port with the same persistence directory, so persistent
sessions and retained messages survive, as they do on the leader.
"""

from __future__ import annotations

import getpass
import shutil
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

HOST = "127.0.0.1"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.02


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise AssertionError(
            "mosquitto is not installed. Run the tests with the project's test command (scripts/test), "
            "which installs it, or install the Debian package: apt-get install mosquitto"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _BrokerProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.exit: Failure | None = None
        self._waiters: list[Deferred[None]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        del self.output[:-65536]  # keep the tail: enough to explain a failure

    def processEnded(self, reason: Failure) -> None:
        self.exit = reason
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def ended(self) -> Deferred[None]:
        if self.exit is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d


class _Probe(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(None)


async def _accepts(reactor: Any, port: int) -> bool:
    """Whether the port accepts a TCP connection (closed again before returning)."""
    try:
        probe = await TCP4ClientEndpoint(reactor, HOST, port, timeout=1).connect(Factory.forProtocol(_Probe))
    except Exception:
        return False
    await probe.closed
    return True


class Broker:
    """A mosquitto process; ``host``/``port`` stay the same across ``stop()``/``start()``."""

    def __init__(self, reactor: Any, directory: Path) -> None:
        self._reactor = reactor
        self._executable = find_mosquitto()
        self.host = HOST
        self.port = free_port()
        self.directory = directory
        self._config = directory / "mosquitto.conf"
        self._config.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "max_inflight_messages 0\n"  # as the cluster's broker (tools/cluster.py)
            "max_queued_messages 200000\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to a user who cannot write here
            "log_dest stderr\n"
        )
        self._process: _BrokerProcess | None = None

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    def stop(self) -> Deferred[None]:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it lingers; idempotent."""
        return Deferred.fromCoroutine(self._stop())

    async def _start(self) -> None:
        process = self._process = _BrokerProcess()
        self._reactor.spawnProcess(process, self._executable, [self._executable, "-c", str(self._config)], env={}, path=str(self.directory))
        deadline = self._reactor.seconds() + START_TIMEOUT
        while not await _accepts(self._reactor, self.port):
            if process.exit is not None or self._reactor.seconds() > deadline:
                await self._stop()
                raise AssertionError(f"mosquitto did not start on port {self.port}:\n{process.output.decode(errors='replace')}")
            await deferLater(self._reactor, POLL_INTERVAL)

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.exit is not None:
            return
        with suppress(ProcessExitedAlready):  # exited, processEnded not delivered yet
            process.transport.signalProcess("TERM")
        try:
            await process.ended().addTimeout(STOP_TIMEOUT, self._reactor)
        except defer.TimeoutError:
            with suppress(ProcessExitedAlready):
                process.transport.signalProcess("KILL")
            await process.ended()


async def start_mosquitto(reactor: Any, testcase: TestCase) -> Broker:
    """Start a broker for this test; it is stopped in the test's cleanup."""
    directory = Path(testcase.mktemp()).absolute()
    directory.mkdir(parents=True)
    broker = Broker(reactor, directory)
    testcase.addCleanup(broker.stop)
    await broker.start()
    return broker
