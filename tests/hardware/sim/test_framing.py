"""The socket protocol in memory: framing, replies, report mode, garbage."""

from __future__ import annotations

import struct

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.hardware.sim.daemon import Daemon
from pioreactor_appliance.hardware.sim.protocol import (
    HEADER,
    MAX_EXTENSION,
    REPLY,
    REPORT,
    Cmd,
    Err,
)
from pioreactor_appliance.hardware.sim.server import PigpioFactory, PigpioProtocol


def request(cmd: int, p1: int = 0, p2: int = 0, ext: bytes = b"") -> bytes:
    return HEADER.pack(cmd, p1, p2, len(ext)) + ext


class FramingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.daemon = Daemon.create(self.clock)
        self.factory = PigpioFactory(self.daemon)
        self.addCleanup(self.daemon.stop)

    def connect(self) -> tuple[PigpioProtocol, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def replies(self, transport: StringTransport) -> list[tuple[int, int, int, int]]:
        data = transport.value()
        transport.clear()
        self.assertEqual(len(data) % REPLY.size, 0)
        return [REPLY.unpack_from(data, i) for i in range(0, len(data), REPLY.size)]

    def test_a_tick_past_2_31_microseconds_is_answered_with_its_32_bits(self) -> None:
        protocol, transport = self.connect()
        self.clock.advance(3_000.0)  # 3e9 µs: above 2**31, below 2**32
        protocol.dataReceived(request(Cmd.TICK))
        data = transport.value()
        self.assertEqual(len(data), REPLY.size)
        self.assertEqual(struct.unpack_from("<I", data, 12)[0], 3_000_000_000)

    def test_a_request_split_anywhere_is_answered_once_complete(self) -> None:
        protocol, transport = self.connect()
        whole = request(Cmd.PWM, 17, 100) + request(Cmd.GDC, 17)
        for i in range(len(whole)):
            protocol.dataReceived(whole[i : i + 1])
        self.assertEqual(self.replies(transport), [(Cmd.PWM, 17, 100, 0), (Cmd.GDC, 17, 0, 100)])

    def test_unknown_command_and_bad_arguments_answer_pigpio_errors(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(
            request(200)
            + request(Cmd.PWM, 40, 10)
            + request(Cmd.PWM, 17, 256)
            + request(Cmd.PRS, 17, 24)
            + request(Cmd.READ, 54)
            + request(Cmd.HP, 17, 1000, struct.pack("<I", 1))
            + request(Cmd.HP, 12, 1000, b"\x01")
            + request(Cmd.I2CC, 3)
        )
        results = [r[3] for r in self.replies(transport)]
        self.assertEqual(
            results,
            [Err.UNKNOWN_COMMAND, Err.BAD_USER_GPIO, Err.BAD_DUTYCYCLE, Err.BAD_DUTYRANGE, Err.BAD_GPIO, Err.NOT_HPWM_GPIO, Err.BAD_PARAM, Err.BAD_HANDLE],
        )
        self.assertFalse(transport.disconnecting)

    def test_an_impossible_extension_closes_only_that_connection(self) -> None:
        bad, bad_transport = self.connect()
        good, good_transport = self.connect()
        bad.dataReceived(HEADER.pack(Cmd.I2CWD, 0, 0, MAX_EXTENSION + 1))
        self.assertTrue(bad_transport.disconnecting)
        good.dataReceived(request(Cmd.TICK))
        self.assertEqual(len(self.replies(good_transport)), 1)

    def test_report_mode_sends_monitored_changes_and_ends_on_nc(self) -> None:
        command, command_transport = self.connect()
        reports, report_transport = self.connect()
        reports.dataReceived(request(Cmd.NOIB))
        handle = self.replies(report_transport)[0][3]
        command.dataReceived(request(Cmd.NB, handle, 1 << 21))
        self.clock.advance(2.5)
        self.daemon.board.drive(21, 1)
        self.daemon.board.drive(22, 1)  # not monitored
        self.clock.advance(0.001)
        self.daemon.board.drive(21, 0)
        data = report_transport.value()
        self.assertEqual(
            [REPORT.unpack_from(data, i) for i in range(0, len(data), REPORT.size)],
            [(0, 0, 2_500_000, 1 << 21), (1, 0, 2_501_000, 1 << 22)],
        )
        reports.dataReceived(request(Cmd.TICK))  # ignored on a report stream
        self.assertEqual(len(report_transport.value()), 2 * REPORT.size)
        reports.dataReceived(request(Cmd.NC, handle))
        self.assertTrue(report_transport.disconnecting)
        command.dataReceived(request(Cmd.NB, handle, 1))
        self.assertEqual(self.replies(command_transport)[-1][3], Err.BAD_HANDLE)

    def test_idle_reports_keep_alive_and_watchdogs_report_timeouts(self) -> None:
        command, _ = self.connect()
        reports, report_transport = self.connect()
        reports.dataReceived(request(Cmd.NOIB))
        report_transport.clear()
        command.dataReceived(request(Cmd.NB, 0, 1 << 4) + request(Cmd.WDOG, 4, 500))
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        self.assertEqual(REPORT.unpack(report_transport.value()[12:24]), (1, 0x20 | 4, 1_000_000, 0))
        command.dataReceived(request(Cmd.WDOG, 4, 0))
        report_transport.clear()
        self.clock.advance(59)
        self.assertEqual(report_transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(REPORT.unpack(report_transport.value())[1], 0x40)

    def test_closing_a_report_connection_frees_its_handle_and_i2c_handles(self) -> None:
        command, transport = self.connect()
        reports, report_transport = self.connect()
        reports.dataReceived(request(Cmd.NOIB))
        command.dataReceived(request(Cmd.I2CO, 1, 0x2C, struct.pack("<I", 0)))
        self.assertEqual(self.replies(transport)[0][3], 0)
        reports.connectionLost(None)
        command.connectionLost(None)
        self.assertEqual(self.daemon.notifications.handles, {})
        self.assertEqual(self.daemon.i2c.handles, {})
        self.assertEqual(self.factory.connections, set())
