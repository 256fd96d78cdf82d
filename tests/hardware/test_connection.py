"""The hardware thread: order, safe states on every connection, retries, edges on the reactor thread."""

from __future__ import annotations

import threading
from typing import Any

import pigpio
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.connection import (
    HardwareUnavailable,
    PigpioConnection,
    _open_pigpio,
)
from pioreactor_appliance.hardware.sim.model import build_pioreactor
from pioreactor_appliance.hardware.sim.server import PigpioFactory

from .fakes import FakePi


class Dialer:
    """Hands out FakePis, refusing the first ``refusals`` attempts."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.made: list[FakePi] = []

    def __call__(self, host: str, port: int) -> FakePi:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError(f"nothing at {host}:{port}")
        self.made.append(FakePi())
        return self.made[-1]


class ConnectionTests(TestCase):
    def start(self, dialer: Dialer) -> PigpioConnection:
        connection = PigpioConnection(reactor, "127.0.0.1", 1, connect=dialer, retry_seconds=(0.01, 0.02))
        connection.add_safe_state(lambda pi: pi.set_PWM_dutycycle(18, 0))
        connection.startService()
        self.addCleanup(lambda: connection.stopService() if connection.running else None)
        return connection

    async def connected(self, connection: PigpioConnection) -> None:
        for _ in range(500):
            if connection.connected:
                return
            await deferLater(reactor, 0.005)
        self.fail("never connected")

    async def test_calls_run_on_the_hardware_thread_in_order_after_the_safe_state(self) -> None:
        dialer = Dialer()
        connection = self.start(dialer)
        await self.connected(connection)
        for value in (1, 2, 3):
            connection.call(lambda pi, v=value: pi.set_PWM_dutycycle(17, v))
        await connection.call(lambda pi: None)
        pi = dialer.made[0]
        self.assertEqual(pi.calls, [("duty", 18, 0), ("duty", 17, 1), ("duty", 17, 2), ("duty", 17, 3)])
        self.assertEqual(len(pi.threads), 1)
        self.assertNotIn(threading.current_thread().name, pi.threads)

    async def test_unreachable_pigpiod_is_logged_and_retried(self) -> None:
        dialer = Dialer(refusals=2)
        connection = self.start(dialer)
        with self.assertRaises(HardwareUnavailable):
            await connection.call(lambda pi: None)
        await self.connected(connection)
        self.assertEqual(len(dialer.made), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0, "a refused connection is a logged error event, not a traceback")

    async def test_a_lost_connection_reconnects_and_outputs_go_safe_again(self) -> None:
        dialer = Dialer()
        connection = self.start(dialer)
        await self.connected(connection)
        first = dialer.made[0]
        first.fail_with = BrokenPipeError("pigpiod went away")
        with self.assertRaises(BrokenPipeError):
            await connection.call(lambda pi: pi.set_PWM_dutycycle(17, 5))
        await self.connected(connection)
        second = dialer.made[1]
        self.assertEqual(second.calls[0], ("duty", 18, 0))
        self.assertTrue(first.stopped)

    async def test_device_errors_do_not_drop_the_connection(self) -> None:
        dialer = Dialer()
        connection = self.start(dialer)
        await self.connected(connection)

        def refuse(pi: Any) -> None:
            raise pigpio.error("I2C read failed")

        with self.assertRaises(pigpio.error):
            await connection.call(refuse)
        self.assertTrue(connection.connected)
        self.assertEqual(len(dialer.made), 1)

    async def test_edges_reach_the_reactor_thread_across_reconnections(self) -> None:
        dialer = Dialer()
        connection = self.start(dialer)
        await self.connected(connection)
        seen: list[tuple[int, int, int, str]] = []
        arrived: Deferred[None] = Deferred()

        def on_edge(gpio: int, level: int, tick: int) -> None:
            seen.append((gpio, level, tick, threading.current_thread().name))
            if not arrived.called:
                arrived.callback(None)

        connection.watch(21, pigpio.FALLING_EDGE, on_edge)
        await connection.call(lambda pi: None)
        gpio, edge, f = dialer.made[0].callbacks[0]
        self.assertEqual((gpio, edge), (21, pigpio.FALLING_EDGE))
        threading.Thread(target=f, args=(21, 0, 1234)).start()  # as pigpio's notification thread would
        await arrived
        self.assertEqual(seen, [(21, 0, 1234, threading.current_thread().name)])

    async def test_stop_puts_outputs_safe_and_closes(self) -> None:
        dialer = Dialer()
        connection = self.start(dialer)
        await self.connected(connection)
        await connection.stopService()
        pi = dialer.made[0]
        self.assertEqual(pi.calls[-2:], [("duty", 18, 0), ("stop",)])
        with self.assertRaises(HardwareUnavailable):
            await connection.call(lambda pi: None)

    async def test_a_client_that_fails_its_set_up_is_closed_and_retried(self) -> None:
        class Broken(Dialer):
            def __call__(self, host: str, port: int) -> FakePi:
                pi = super().__call__(host, port)
                if len(self.made) == 1:
                    pi.fail_with = pigpio.error("bad gpio")
                return pi

        dialer = Broken()
        connection = self.start(dialer)
        await self.connected(connection)
        self.assertEqual(len(dialer.made), 2)
        self.assertTrue(dialer.made[0].stopped)
        self.assertEqual(dialer.made[1].calls[0], ("duty", 18, 0))


class OpenTests(TestCase):
    """The real opening path, against sockets: it gives up in time instead of holding the hardware thread."""

    async def listen(self, factory: Factory) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_a_port_that_accepts_and_never_answers_times_out(self) -> None:
        accepted: list[Protocol] = []

        class Silent(Protocol):
            def connectionMade(self) -> None:
                accepted.append(self)

        self.addCleanup(lambda: [p.transport.abortConnection() for p in accepted])
        port = await self.listen(Factory.forProtocol(Silent))
        with self.assertRaises(TimeoutError):
            await deferToThread(_open_pigpio, "127.0.0.1", port, 0.3)
        self.assertEqual(len(accepted), 1, "one probe, and pigpio's own connect never tried")

    async def test_a_port_that_hangs_up_is_refused(self) -> None:
        class HangsUp(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.loseConnection()

        port = await self.listen(Factory.forProtocol(HangsUp))
        with self.assertRaises(ConnectionResetError):
            await deferToThread(_open_pigpio, "127.0.0.1", port, 5.0)

    async def test_the_simulated_pigpiod_is_opened(self) -> None:
        daemon, _model = build_pioreactor(reactor, seed=0)
        port = await self.listen(PigpioFactory(daemon))
        pi = await deferToThread(_open_pigpio, "127.0.0.1", port, 5.0)
        try:
            self.assertTrue(pi.connected)
            self.assertIsInstance(await deferToThread(pi.get_current_tick), int)
        finally:
            await deferToThread(pi.stop)
