"""The sd_notify messages a unit sends systemd, read from a real datagram socket as systemd would."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from pioreactor_appliance import tap
from pioreactor_appliance.systemd_notify import SystemdNotifier


class SystemdNotifierTests(TestCase):
    def setUp(self) -> None:
        folder = tempfile.mkdtemp(prefix="notify-")  # short: socket paths are limited to 108 bytes
        self.addCleanup(shutil.rmtree, folder)
        self.path = os.path.join(folder, "notify")
        self.systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.systemd.bind(self.path)
        self.systemd.setblocking(False)
        self.addCleanup(self.systemd.close)
        self.clock = Clock()

    def received(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.systemd.recv(4096).decode())
            except BlockingIOError:
                return messages

    def notifier(self, **environ: str) -> SystemdNotifier:
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": self.path, **environ}, self.clock, pid=4242)
        assert notifier is not None
        return notifier

    def test_ready_then_a_ping_every_half_watchdog_period(self) -> None:
        notifier = self.notifier(WATCHDOG_USEC="60000000", WATCHDOG_PID="4242")
        notifier.startService()
        self.assertEqual(self.received(), ["READY=1\nSTATUS=serving", "WATCHDOG=1"])
        self.clock.advance(29.9)
        self.assertEqual(self.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.received(), ["WATCHDOG=1"])
        self.clock.pump([30, 30])
        self.assertEqual(self.received(), ["WATCHDOG=1", "WATCHDOG=1"])

    def test_stopping_ends_the_pings(self) -> None:
        notifier = self.notifier(WATCHDOG_USEC="10000000")
        notifier.startService()
        self.received()
        notifier.stopService()
        self.assertEqual(self.received(), ["STOPPING=1"])
        self.clock.advance(60)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_watchdog_without_its_period_or_for_another_process(self) -> None:
        for environ in ({}, {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}):
            notifier = self.notifier(**environ)
            notifier.startService()
            self.clock.advance(60)
            self.assertEqual(self.received(), ["READY=1\nSTATUS=serving"], environ)
            notifier.stopService()
            self.received()

    def test_a_bad_watchdog_period_is_logged_and_ignored(self) -> None:
        for usec in ("soon", "0", "-5"):
            notifier = self.notifier(WATCHDOG_USEC=usec)
            self.assertIsNone(notifier.watchdog_interval, usec)
            self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_abstract_socket_names(self) -> None:
        name = f"pioreactor-test-{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(b"\0" + name.encode())
        self.addCleanup(listener.close)
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}, self.clock)
        assert notifier is not None
        notifier.startService()
        self.assertEqual(listener.recv(4096), b"READY=1\nSTATUS=serving")
        notifier.stopService()

    def test_systemd_gone_is_not_an_error(self) -> None:
        notifier = self.notifier(WATCHDOG_USEC="2000000")
        self.systemd.close()
        os.unlink(self.path)
        notifier.startService()  # must not raise: the service keeps running without systemd
        self.clock.advance(5)
        notifier.stopService()

    def test_not_under_systemd(self) -> None:
        self.assertIsNone(SystemdNotifier.from_environ({}, self.clock))
        self.assertIsNone(SystemdNotifier.from_environ({"NOTIFY_SOCKET": ""}, self.clock))


class TreeTests(TestCase):
    def test_the_notifier_is_the_last_service_under_systemd(self) -> None:
        data_dir = self.mktemp()
        os.mkdir(data_dir)
        options = tap.Options()
        options.parseOptions(["--data-dir", data_dir, "--unit", "pio1", "--role", "worker", "--listen", "tcp:0", "--mqtt", "127.0.0.1:1"])
        settings = tap.Settings.from_options(options)
        under_systemd = tap.build_service(settings, MemoryReactorClock(), environ={"NOTIFY_SOCKET": "/nonexistent/notify"})
        self.assertEqual(list(under_systemd)[-1].name, "systemd")
        by_hand = tap.build_service(settings, MemoryReactorClock(), environ={})
        self.assertNotIn("systemd", [s.name for s in by_hand])
