from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import urllib.error
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance import firstboot
from pioreactor_appliance.firstboot import (
    Settings,
    Wifi,
    first_boot,
    parse_settings,
    register,
)

# The log goes to the journal on a Pi; here it would only clutter trial's output.
firstboot.log.addHandler(logging.NullHandler())
firstboot.log.propagate = False
REPO = Path(__file__).resolve().parent.parent
MACHINE_ID = "abcdef0123456789abcdef0123456789"
GOOD = """
[pioreactor]
role = worker              ; a comment
hostname = pio02
leader_hostname = lab-leader
leader_address = 10.0.0.5
[wifi]
ssid = Lab Wifi
password = secret-psk
country = gb
"""


class FakeRunner:
    """Records the argument lists first boot would run; answers findmnt with ``root``."""

    def __init__(self, root: str = "/dev/vda2") -> None:
        self.root = root
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None) -> tuple[int, str]:
        self.calls.append((list(argv), stdin))
        return (0, f"{self.root}\n") if argv[0] == "findmnt" else (0, "")


class ParseTests(SynchronousTestCase):
    def test_missing_file_is_every_default(self) -> None:
        settings, problems = parse_settings(None, MACHINE_ID)
        self.assertEqual(settings, Settings("both", "pioreactor-abcd", "pioreactor-abcd", "pioreactor-abcd.local", None))
        self.assertEqual(problems, [])
        self.assertEqual(settings.broker_address, "localhost")

    def test_good_worker_file(self) -> None:
        settings, problems = parse_settings(GOOD, MACHINE_ID)
        self.assertEqual(settings, Settings("worker", "pio02", "lab-leader", "10.0.0.5", Wifi("Lab Wifi", "secret-psk", "GB")))
        self.assertEqual(problems, [])
        self.assertEqual(settings.broker_address, "10.0.0.5")
        self.assertFalse(settings.is_leader)

    def test_worker_defaults(self) -> None:
        settings, problems = parse_settings("[pioreactor]\nrole=worker\n", MACHINE_ID)
        self.assertEqual((settings.leader_hostname, settings.leader_address), ("leader", "leader.local"))
        self.assertEqual(problems, ["[pioreactor] leader_hostname is not set for a worker; leader is used"])
        settings, _ = parse_settings("[pioreactor]\nrole=worker\nleader_hostname=big\n", MACHINE_ID)
        self.assertEqual(settings.leader_address, "big.local")

    def test_leader_is_its_own_leader(self) -> None:
        settings, problems = parse_settings("[pioreactor]\nrole=leader\nhostname=main\nleader_address=other.local\n", MACHINE_ID)
        self.assertEqual((settings.leader_hostname, settings.leader_address, settings.broker_address), ("main", "main.local", "localhost"))
        self.assertEqual(problems, ["[pioreactor] leader_address is for workers; a leader is its own leader, 'other.local' is ignored"])

    def test_bad_values_are_named_and_defaulted(self) -> None:
        text = "[pioreactor]\nrole=boss\nhostname=Bad_Name\ncolour=red\n[extra]\nx=1\n[wifi]\nssid=Lab\ncountry=Britain\n"
        settings, problems = parse_settings(text, MACHINE_ID)
        self.assertEqual((settings.role, settings.hostname), ("both", "pioreactor-abcd"))
        self.assertEqual(settings.wifi, Wifi("Lab", None, None))
        self.assertEqual(len(problems), 5, problems)
        for name in ("role = 'boss'", "hostname = 'Bad_Name'", "[pioreactor] colour", "[extra]", "country = 'BRITAIN'"):
            self.assertTrue(any(name in p for p in problems), (name, problems))

    def test_worker_bad_leader_fields(self) -> None:
        settings, problems = parse_settings("[pioreactor]\nrole=worker\nleader_hostname=-x\nleader_address=a b\n", MACHINE_ID)
        self.assertEqual((settings.leader_hostname, settings.leader_address), ("leader", "leader.local"))
        self.assertEqual(len(problems), 2, problems)

    def test_bad_wifi_is_not_configured(self) -> None:
        for wifi in ("ssid=\n", "ssid=Lab\npassword=short\n", f"ssid={'x' * 33}\n", "ssid=Lab\npassword=" + "p" * 64 + "\n"):
            settings, problems = parse_settings(f"[wifi]\n{wifi}country=GB\n", MACHINE_ID)
            self.assertIsNone(settings.wifi, wifi)
            self.assertEqual(len(problems), 1, problems)
            self.assertIn("Wi-Fi is not configured", problems[0])

    def test_unreadable_file_is_every_default(self) -> None:
        settings, problems = parse_settings("role=leader\n", MACHINE_ID)
        self.assertEqual(settings.role, "both")
        self.assertEqual(len(problems), 1)
        self.assertIn("cannot be read", problems[0])

    def test_default_hostname_without_machine_id_is_random(self) -> None:
        self.assertEqual(firstboot.default_hostname(MACHINE_ID), "pioreactor-abcd")
        name = firstboot.default_hostname("")
        self.assertRegex(name, r"^pioreactor-[0-9a-f]{4}$")


class FirstBootTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.boot = Path(self.mktemp()).absolute()
        self.boot.mkdir()
        (self.root / "etc").mkdir(parents=True)
        (self.root / "etc/machine-id").write_text(MACHINE_ID + "\n")
        (self.root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tbuildhost\n")
        (self.root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\npioreactor:x:990:991::/var/lib/pioreactor:/usr/sbin/nologin\nlab:x:1000:1000::/home/lab:/bin/bash\n")
        shutil.copytree(REPO / "systemd/avahi", self.root / firstboot.AVAHI_TEMPLATES)

    def run_first_boot(self, ini: str | None, system: bool = False, runner: FakeRunner | None = None, sys_block: Path | None = None) -> bool:
        if ini is not None:
            (self.boot / "pioreactor.ini").write_text(ini)
        return first_boot(self.root, self.boot, system, runner or FakeRunner(), sys_block or self.root / "no-sys")

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def mode(self, relative: str) -> int:
        return (self.root / relative).stat().st_mode & 0o7777

    def avahi(self) -> list[str]:
        return sorted(p.name for p in (self.root / "etc/avahi/services").iterdir())

    def test_both_by_default(self) -> None:
        self.assertTrue(self.run_first_boot(None))
        self.assertEqual(self.read("etc/pioreactor/appliance.env"), "PIOREACTOR_ROLE=leader\nPIOREACTOR_UNIT=pioreactor-abcd\n")
        self.assertEqual(self.read("etc/pioreactor/leader"), "")
        self.assertEqual(self.read("etc/hostname"), "pioreactor-abcd\n")
        self.assertEqual(self.read("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tpioreactor-abcd\n")
        self.assertEqual(
            self.read("var/lib/pioreactor/config.ini"),
            "[cluster.topology]\nleader_hostname=pioreactor-abcd\nleader_address=pioreactor-abcd.local\n\n[mqtt]\nbroker_address=localhost\n",
        )
        self.assertEqual(self.avahi(), ["pioreactor-http.service", "pioreactor-mqtt.service", "pioreactor-pio-worker.service"])
        self.assertTrue((self.root / firstboot.REGISTER_PENDING).exists())
        self.assertTrue((self.root / firstboot.STAMP).exists())
        self.assertFalse((self.root / "etc/wpa_supplicant").exists())
        self.assertFalse((self.root / "home/lab/.ssh").exists())
        for relative in ("etc/pioreactor/appliance.env", "etc/hostname", "etc/hosts", "var/lib/pioreactor/config.ini", "etc/avahi/services/pioreactor-http.service"):
            self.assertEqual(self.mode(relative), 0o644, relative)
        if os.geteuid() == 0:
            stat = (self.root / "var/lib/pioreactor/config.ini").stat()
            self.assertEqual((stat.st_uid, stat.st_gid), (990, 991))

    def test_leader(self) -> None:
        self.run_first_boot("[pioreactor]\nrole=leader\nhostname=main\n")
        self.assertEqual(self.read("etc/pioreactor/appliance.env"), "PIOREACTOR_ROLE=leader\nPIOREACTOR_UNIT=main\n")
        self.assertTrue((self.root / "etc/pioreactor/leader").exists())
        self.assertEqual(self.avahi(), ["pioreactor-http.service", "pioreactor-mqtt.service"])
        self.assertFalse((self.root / firstboot.REGISTER_PENDING).exists())

    def test_worker_keeps_other_config_and_drops_stale_files(self) -> None:
        (self.root / "etc/pioreactor").mkdir()
        (self.root / "etc/pioreactor/leader").write_text("")
        (self.root / "etc/avahi/services").mkdir(parents=True)
        (self.root / "etc/avahi/services/pioreactor-mqtt.service").write_text("stale")
        (self.root / "etc/avahi/services/ssh.service").write_text("theirs")
        (self.root / "var/lib/pioreactor").mkdir(parents=True)
        (self.root / "var/lib/pioreactor/config.ini").write_text("[ui]\nport=80\n[mqtt]\nbroker_address=old\n")
        self.run_first_boot(GOOD)
        self.assertEqual(self.read("etc/pioreactor/appliance.env"), "PIOREACTOR_ROLE=worker\nPIOREACTOR_UNIT=pio02\n")
        self.assertFalse((self.root / "etc/pioreactor/leader").exists())
        self.assertEqual(self.avahi(), ["pioreactor-http.service", "pioreactor-pio-worker.service", "ssh.service"])
        self.assertEqual(
            self.read("var/lib/pioreactor/config.ini"),
            "[ui]\nport=80\n\n[mqtt]\nbroker_address=10.0.0.5\n\n[cluster.topology]\nleader_hostname=lab-leader\nleader_address=10.0.0.5\n",
        )
        self.assertTrue((self.root / firstboot.REGISTER_PENDING).exists(), "a worker asks its leader to add it")

    def test_the_leader_serves_the_clusters_clock_and_workers_follow_it(self) -> None:
        self.run_first_boot("[pioreactor]\nrole=both\nhostname=main\n")
        leader = self.read(firstboot.CHRONY_CONF)
        self.assertIn("allow 192.168.0.0/16\n", leader)
        self.assertIn("allow 10.0.0.0/8\n", leader)
        self.assertIn("local stratum 10\n", leader, "it serves time even with no internet to sync from")
        self.assertNotIn("server ", leader)
        (self.root / firstboot.STAMP).unlink()  # the same card, set up again as a worker
        self.run_first_boot(GOOD)
        self.assertEqual(
            self.read(firstboot.CHRONY_CONF),
            "# Written by pioreactor first boot: this worker keeps its leader's time.\nserver 10.0.0.5 iburst prefer\n",
        )
        self.assertEqual(self.mode(firstboot.CHRONY_CONF), 0o644)

    def test_the_ntp_host_of_a_leader_address(self) -> None:
        self.assertEqual(firstboot.ntp_host("lab-leader.local:8080"), "lab-leader.local")
        self.assertEqual(firstboot.ntp_host("10.0.0.5"), "10.0.0.5")
        self.assertEqual(firstboot.ntp_host("fd00::5"), "fd00::5")

    def test_wifi_with_wpa_supplicant(self) -> None:
        self.run_first_boot(GOOD)
        conf = firstboot.WPA_CONF
        self.assertEqual(self.mode(conf), 0o600)
        psk = firstboot.wpa_psk(Wifi("Lab Wifi", "secret-psk", "GB"))
        self.assertEqual(len(psk), 64)
        self.assertEqual(
            self.read(conf),
            "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\ncountry=GB\n\nnetwork={\n"
            f"\tssid={b'Lab Wifi'.hex()}\n\tpsk={psk}\n}}\n",
        )
        self.assertNotIn("secret-psk", self.read(conf))
        link = self.root / "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service"
        self.assertEqual(os.readlink(link), "/lib/systemd/system/wpa_supplicant@.service")
        self.assertEqual(self.read(firstboot.REGDOM_CONF), "options cfg80211 ieee80211_regdom=GB\n")
        self.assertFalse((self.root / firstboot.NM_CONNECTION).exists())

    def test_wifi_with_network_manager(self) -> None:
        (self.root / "usr/sbin").mkdir(parents=True)
        (self.root / "usr/sbin/NetworkManager").write_text("")
        self.run_first_boot("[wifi]\nssid=Lab;1\ncountry=DE\n")
        profile = self.read(firstboot.NM_CONNECTION)
        self.assertEqual(self.mode(firstboot.NM_CONNECTION), 0o600)
        self.assertIn("type=wifi\n", profile)
        self.assertIn("ssid=76;97;98;59;49;\n", profile)
        self.assertNotIn("wifi-security", profile)  # an open network
        self.assertFalse((self.root / firstboot.WPA_CONF).exists())
        self.assertEqual(self.read(firstboot.REGDOM_CONF), "options cfg80211 ieee80211_regdom=DE\n")

    def test_network_manager_profile_with_password(self) -> None:
        wifi = Wifi("Lab", "password1", None)
        profile = firstboot.network_manager_profile(wifi, "u-1")
        self.assertIn(f"[wifi-security]\nkey-mgmt=wpa-psk\npsk={firstboot.wpa_psk(wifi)}\n", profile)
        self.assertIn("uuid=u-1\n", profile)

    def test_authorized_keys(self) -> None:
        (self.boot / "authorized_keys").write_text("ssh-ed25519 AAAA lab@laptop\n")
        self.run_first_boot(None)
        self.assertEqual(self.read("home/lab/.ssh/authorized_keys"), "ssh-ed25519 AAAA lab@laptop\n")
        self.assertEqual(self.mode("home/lab/.ssh/authorized_keys"), 0o600)
        self.assertEqual(self.mode("home/lab/.ssh"), 0o700)
        if os.geteuid() == 0:
            self.assertEqual((self.root / "home/lab/.ssh/authorized_keys").stat().st_uid, 1000)

    def test_runs_once(self) -> None:
        self.assertTrue(self.run_first_boot("[pioreactor]\nhostname=first\n"))
        (self.boot / "pioreactor.ini").write_text("[pioreactor]\nhostname=second\n")
        runner = FakeRunner()
        self.assertFalse(first_boot(self.root, self.boot, True, runner, self.root / "no-sys"))
        self.assertEqual(self.read("etc/hostname"), "first\n")
        self.assertEqual(runner.calls, [])

    def test_system_actions_without_free_space(self) -> None:
        runner = FakeRunner()
        self.run_first_boot("[pioreactor]\nhostname=main\n", system=True, runner=runner, sys_block=self.sys_block(free=100))
        self.assertEqual(
            runner.calls,
            [(["hostname", "main"], None), (["ssh-keygen", "-A"], None), (["findmnt", "--noheadings", "--output", "SOURCE", "/"], None)],
        )

    def test_system_actions_grow_the_root(self) -> None:
        runner = FakeRunner()
        self.run_first_boot(None, system=True, runner=runner, sys_block=self.sys_block(free=4096))
        self.assertEqual(
            runner.calls[3:],
            [
                (["sfdisk", "--no-reread", "-N", "2", "/dev/vda"], ", +\n"),
                (["partx", "-u", "/dev/vda"], None),
                (["resize2fs", "/dev/vda2"], None),
            ],
        )

    def test_root_not_grown_when_a_partition_follows_or_not_a_partition(self) -> None:
        sys_block = self.sys_block(free=4096)
        self.partition(sys_block.resolve() / "vda" / "vda3", 3, 600000, 100)
        runner = FakeRunner()
        firstboot.grow_root(runner, sys_block)
        self.assertEqual([argv[0] for argv, _ in runner.calls], ["findmnt"])
        runner = FakeRunner("/dev/root")
        firstboot.grow_root(runner, sys_block)
        self.assertEqual([argv[0] for argv, _ in runner.calls], ["findmnt"])

    def test_a_failing_step_does_not_fail_first_boot(self) -> None:
        shutil.rmtree(self.root / firstboot.AVAHI_TEMPLATES)
        self.assertTrue(self.run_first_boot(None))
        self.assertTrue((self.root / firstboot.STAMP).exists())
        self.assertTrue((self.root / "etc/pioreactor/appliance.env").exists())

    def sys_block(self, free: int) -> Path:
        """A /sys/class/block look-alike: disk vda (1 GiB) with vda1 and vda2 ending ``free`` sectors before its end."""
        devices = Path(self.mktemp()).absolute() / "devices"
        disk = devices / "vda"
        disk.mkdir(parents=True)
        size = 2097152
        (disk / "size").write_text(f"{size}\n")
        self.partition(disk / "vda1", 1, 8192, 524288)
        self.partition(disk / "vda2", 2, 532480, size - 532480 - free)
        block = devices.parent / "class-block"
        block.mkdir()
        for name in ("vda", "vda1", "vda2"):
            (block / name).symlink_to(disk if name == "vda" else disk / name)
        return block

    def partition(self, path: Path, number: int, start: int, size: int) -> None:
        path.mkdir()
        (path / "partition").write_text(f"{number}\n")
        (path / "start").write_text(f"{start}\n")
        (path / "size").write_text(f"{size}\n")


class RegisterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        (self.root / firstboot.REGISTER_PENDING).parent.mkdir(parents=True)
        (self.root / firstboot.REGISTER_PENDING).write_text("")
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.sleeps: list[float] = []

    def as_role(self, role: str, config: str = "") -> None:
        (self.root / "etc/pioreactor").mkdir(parents=True)
        (self.root / "etc/pioreactor/appliance.env").write_text(f"PIOREACTOR_ROLE={role}\nPIOREACTOR_UNIT=pio02\n")
        (self.root / firstboot.DATA_DIR).mkdir(parents=True)
        (self.root / firstboot.DATA_DIR / "config.ini").write_text(config)

    def urlopen(self, failures: int, error: Exception | None = None):  # type: ignore[no-untyped-def]
        def opener(request, timeout):  # type: ignore[no-untyped-def]
            self.requests.append((request.get_method(), request.full_url, json.loads(request.data)))
            if len(self.requests) <= failures:
                raise error or urllib.error.URLError("connection refused")
            return object()

        return opener

    def refusal(self, code: int, cause: str) -> urllib.error.HTTPError:
        body = io.BytesIO(json.dumps({"error": "Refused.", "cause": cause}).encode())
        return urllib.error.HTTPError("http://x", code, "Refused", {}, body)  # type: ignore[arg-type]

    def test_the_leader_adds_itself_once_after_retries(self) -> None:
        self.as_role("leader")
        self.assertTrue(register(self.root, "main", self.urlopen(failures=2), self.sleeps.append))
        self.assertEqual(self.requests, [("PUT", "http://127.0.0.1/api/workers", {"pioreactor_unit": "main"})] * 3)
        self.assertEqual(self.sleeps, [firstboot.REGISTER_INTERVAL_SECONDS] * 2)
        self.assertFalse((self.root / firstboot.REGISTER_PENDING).exists())
        self.assertTrue(register(self.root, "main", self.urlopen(failures=0), self.sleeps.append))
        self.assertEqual(len(self.requests), 3)

    def test_gives_up_after_bounded_attempts(self) -> None:
        self.as_role("leader")
        self.assertFalse(register(self.root, "main", self.urlopen(failures=10**6), self.sleeps.append))
        self.assertEqual(len(self.requests), firstboot.REGISTER_ATTEMPTS)
        self.assertTrue((self.root / firstboot.REGISTER_PENDING).exists())

    def test_a_worker_asks_its_leader_with_its_model_and_address(self) -> None:
        self.as_role("worker", "[cluster.topology]\nleader_hostname=lab\nleader_address=10.0.0.5\n[hardware]\nmodel=pioreactor_20ml\nmodel_version=1.0\n")
        asked: list[tuple[str, int]] = []
        addresses = iter([None, "10.0.0.23"])  # no address before DHCP answers, then one

        def own_ipv4(host: str, port: int) -> str | None:
            asked.append((host, port))
            return next(addresses)

        failed_step = self.refusal(404, "reachable: no answer from 10.0.0.23")
        self.assertTrue(register(self.root, "pio02", self.urlopen(failures=1, error=failed_step), self.sleeps.append, own_ipv4))
        body = {"name": "pio02", "model": "pioreactor_20ml", "version": "1.0"}
        self.assertEqual(
            self.requests,
            [
                ("POST", "http://10.0.0.5:80/api/workers/setup", body),
                ("POST", "http://10.0.0.5:80/api/workers/setup", {**body, "ipv4_address": "10.0.0.23"}),
            ],
        )
        self.assertEqual(asked, [("10.0.0.5", 80)] * 2)
        self.assertFalse((self.root / firstboot.REGISTER_PENDING).exists())

    def test_a_refusal_that_retrying_cannot_change_ends_at_once(self) -> None:
        self.as_role("worker", "[cluster.topology]\nleader_hostname=lab\nleader_address=lab.local:8080\n")
        refused = self.refusal(400, "name: invalid")
        with self.assertLogs("pioreactor-firstboot", "ERROR") as logged:
            self.assertFalse(register(self.root, "pio02", self.urlopen(failures=1, error=refused), self.sleeps.append, lambda h, p: None))
        self.assertEqual([(m, u) for m, u, _ in self.requests], [("POST", "http://lab.local:8080/api/workers/setup")])
        self.assertEqual(self.sleeps, [])
        self.assertIn("name: invalid", logged.output[0])
        self.assertTrue((self.root / firstboot.REGISTER_PENDING).exists(), "the next boot tries again")

    def test_a_worker_without_a_readable_config_says_so(self) -> None:
        self.as_role("worker", "[hardware\n")
        with self.assertLogs("pioreactor-firstboot", "ERROR") as logged:
            self.assertFalse(register(self.root, "pio02", self.urlopen(failures=0), self.sleeps.append, lambda h, p: None))
        self.assertEqual(self.requests, [])
        self.assertIn("cannot join the cluster", logged.output[0])

    def test_the_address_towards_a_host_is_this_machines(self) -> None:
        self.assertEqual(firstboot.ipv4_towards("127.0.0.1", 80), "127.0.0.1")
        self.assertIsNone(firstboot.ipv4_towards("no-such-host.invalid", 80))


class ImportTests(SynchronousTestCase):
    def test_no_twisted_at_import(self) -> None:
        import subprocess

        code = "import sys, pioreactor_appliance.firstboot; print(any(m.startswith('twisted') for m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
        self.assertEqual(out.stdout.strip(), "False")
