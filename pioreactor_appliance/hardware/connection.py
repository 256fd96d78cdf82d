"""One pigpio client, driven from one hardware thread.

pigpio's client blocks on its socket, so every call runs on a dedicated
single-thread pool: calls keep their order, and the reactor thread never
waits. Edge callbacks arrive on pigpio's own notification thread and are
hopped to the reactor with ``callFromThread``. When pigpiod cannot be
reached, or stops answering, the connection says so in the log, retries with
backoff, and on every (re)connection first puts each output in its safe
state, since pigpiod keeps driving pins across a lost client.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import pigpio
from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..threads import OwnedThreadPool

T = TypeVar("T")

CALL_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
HEARTBEAT_SECONDS = 5.0  # an idle unit still notices a lost pigpiod this soon


class HardwareUnavailable(Exception):
    """pigpiod is not reachable right now; the connection is retrying."""


@define
class _Watch:
    gpio: int
    edge: int
    on_edge: Callable[[int, int, int], None]


class PigpioConnection(Service):
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        connect: Callable[[str, int], Any] | None = None,
        retry_seconds: tuple[float, ...] = RETRY_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._reactor = reactor
        self.host, self.port = host, port
        self._connect_to = connect or _open_pigpio
        self._retry_seconds = retry_seconds
        self._pool = OwnedThreadPool(reactor, 1, 1, "pigpio")
        self._pi: Any = None
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._safe_states: list[Callable[[Any], None]] = []
        self._watches: list[_Watch] = []
        self.connected = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._heartbeat_seconds = heartbeat_seconds

    # --- what drivers use ------------------------------------------------

    def call(self, action: Callable[[Any], T]) -> Deferred[T]:
        """Run ``action(pi)`` on the hardware thread; fails with HardwareUnavailable while disconnected."""
        if not self.connected:
            return fail(HardwareUnavailable(f"pigpiod at {self.host}:{self.port} is not connected; retrying"))
        pi = self._pi
        d: Deferred[T] = deferToThreadPool(self._reactor, self._pool, action, pi)
        return d.addErrback(self._maybe_lost, pi)

    def add_safe_state(self, put_safe: Callable[[Any], None]) -> None:
        """``put_safe(pi)`` runs on the hardware thread on every connection and at shutdown."""
        self._safe_states.append(put_safe)

    def watch(self, gpio: int, edge: int, on_edge: Callable[[int, int, int], None]) -> None:
        """Call ``on_edge(gpio, level, tick)`` on the reactor thread for every edge, across reconnections."""
        watch = _Watch(gpio, edge, on_edge)
        self._watches.append(watch)
        if self.connected:
            self.call(lambda pi: self._register(pi, watch))

    # --- lifecycle --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        self._try_connect()
        self._heartbeat.start(self._heartbeat_seconds, now=False)

    def stopService(self) -> Deferred[None]:
        if not self._pool.started:
            return succeed(None)  # already stopped (a parent may stop its children twice)
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        pi, self._pi, self.connected = self._pi, None, False
        d: Deferred[None] = deferToThreadPool(self._reactor, self._pool, self._close, pi)
        return d.addBoth(lambda _: self._pool.stop())

    def _beat(self) -> None:
        if self.connected:
            self.call(lambda pi: pi.get_current_tick()).addErrback(lambda _: None)  # a loss is handled in call()

    def _try_connect(self) -> None:
        self._retry = None
        d = deferToThreadPool(self._reactor, self._pool, self._open)
        d.addCallbacks(self._opened, self._failed_to_open)

    def _open(self) -> Any:
        pi = self._connect_to(self.host, self.port)
        try:
            for put_safe in self._safe_states:
                put_safe(pi)
            for watch in self._watches:
                self._register(pi, watch)
        except BaseException:
            _discard(pi)  # not half-set-up: the retry opens a fresh client
            raise
        return pi

    def _register(self, pi: Any, watch: _Watch) -> None:
        pi.callback(watch.gpio, watch.edge, lambda gpio, level, tick: self._reactor.callFromThread(watch.on_edge, gpio, level, tick))

    def _opened(self, pi: Any) -> None:
        if not self.running:
            self._pool.callInThread(self._close, pi)
            return
        self._pi, self.connected, self._attempt = pi, True, 0
        self.log.info("Connected to pigpiod at {host}:{port}; outputs are in their safe state", host=self.host, port=self.port)

    def _failed_to_open(self, failure: Any) -> None:
        delay = self._retry_seconds[min(self._attempt, len(self._retry_seconds) - 1)]
        self._attempt += 1
        self.log.error(
            "Cannot reach pigpiod at {host}:{port} ({why}); hardware is unavailable, retrying in {delay:g} s",
            host=self.host,
            port=self.port,
            why=failure.getErrorMessage() or failure.type.__name__,
            delay=delay,
        )
        if self.running:
            self._retry = self._reactor.callLater(delay, self._try_connect)

    def _maybe_lost(self, failure: Any, pi: Any) -> Any:
        """A socket error means pigpiod went away: drop the client and reconnect; other errors are the caller's."""
        if failure.check(OSError, ConnectionError, socket.timeout) and pi is self._pi and self.connected:
            self.connected, self._pi = False, None
            self.log.error("Lost pigpiod at {host}:{port}: {why}; reconnecting", host=self.host, port=self.port, why=failure.getErrorMessage())
            self._pool.callInThread(_discard, pi)
            self._try_connect()
        return failure

    def _close(self, pi: Any) -> None:
        if pi is None:
            return
        try:
            for put_safe in self._safe_states:
                put_safe(pi)
        finally:
            pi.stop()


def _discard(pi: Any) -> None:
    """Let go of a client whose daemon is gone; its sockets may already be dead."""
    try:
        pi.stop()
    except Exception as e:  # noqa: BLE001 - nothing more can be done with a dead client
        PigpioConnection.log.info("Closing the lost pigpio client: {why}", why=e)


def _open_pigpio(host: str, port: int, timeout: float = CALL_TIMEOUT_SECONDS) -> Any:
    # pigpio connects and waits for its first answers with no timeout, so a host that does not
    # answer, or anything on the port that accepts and never replies, would hold the hardware
    # thread forever (and the appliance's stop with it). One command answered in time first.
    _probe(host, port, timeout)
    pi = pigpio.pi(host, port, show_errors=False)
    if not pi.connected:
        raise ConnectionRefusedError(f"no pigpiod answers at {host}:{port}")
    pi.sl.s.settimeout(CALL_TIMEOUT_SECONDS)  # a daemon that stops answering is a lost connection, not a hung thread
    return pi


_PI_CMD_TICK = 16  # pigpiod's socket protocol: 16-byte request and answer


def _probe(host: str, port: int, timeout: float) -> None:
    """Ask pigpiod for its tick; raises ``OSError`` (``TimeoutError`` included) unless it answers."""
    with socket.create_connection((host, port), timeout=timeout) as probe:
        probe.sendall(struct.pack("IIII", _PI_CMD_TICK, 0, 0, 0))
        answer = b""
        while len(answer) < 16:
            chunk = probe.recv(16 - len(answer))
            if not chunk:
                raise ConnectionResetError(f"{host}:{port} closed the connection without answering as pigpiod")
            answer += chunk
