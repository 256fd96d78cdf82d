"""The Host allow-list: own names and addresses pass, other names do not."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.security.hosts import HostCheck, host_name


class HostNameTests(SynchronousTestCase):
    def test_port_and_case_are_dropped(self) -> None:
        self.assertEqual(host_name("Leader.local:8080"), "leader.local")
        self.assertEqual(host_name("[::1]:80"), "::1")
        self.assertEqual(host_name("fe80::1"), "fe80::1")
        self.assertEqual(host_name("pio1"), "pio1")


class HostCheckTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.check = HostCheck.of(["pio1", "10.0.0.21:80", ""], ["lab-gateway.example", " Dash.Lab "])

    def test_own_names_pass(self) -> None:
        for host in [b"pio1", b"PIO1:80", b"pio1.local", b"pio1.local.", b"localhost:8080", b"lab-gateway.example", b"dash.lab"]:
            self.assertTrue(self.check.allows(host), host)

    def test_any_ip_address_passes(self) -> None:
        for host in [b"10.0.0.21", b"192.168.1.7:80", b"[::1]:8080", b"[fe80::1]"]:
            self.assertTrue(self.check.allows(host), host)

    def test_other_names_are_refused(self) -> None:
        for host in [b"evil.example", b"pio2.local", b"pio1.evil.example", b"10.0.0.21.nip.io", b"\xff"]:
            self.assertFalse(self.check.allows(host), host)

    def test_missing_host_passes(self) -> None:
        self.assertTrue(self.check.allows(None))

    def test_star_switches_the_check_off(self) -> None:
        self.assertTrue(HostCheck.of(["pio1"], ["*"]).allows(b"anything.example"))
