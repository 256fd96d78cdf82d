"""The twistd plugin, the options and the service tree for each role."""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance import tap
from pioreactor_appliance.resources.routing import ApplianceSite

from .helpers import build_unit


class PluginTests(SynchronousTestCase):
    def test_dropin_points_at_the_tap(self) -> None:
        from twisted.plugins import pioreactor_dropin

        maker = pioreactor_dropin.pioreactor
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertEqual(maker.tapname, "pioreactor")
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        (self.data_dir / "config.ini").write_text("[cluster.topology]\nleader_hostname=boss\nleader_address=10.0.0.1\n[mqtt]\nbroker_address=10.0.0.1\nbroker_port=1884\n")

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(["--data-dir", str(self.data_dir), *args])
        return options

    def test_role_follows_the_leader_hostname(self) -> None:
        self.assertEqual(self.parse("--unit", "boss")["role"], "leader")
        self.assertEqual(self.parse("--unit", "pio1")["role"], "worker")
        self.assertEqual(self.parse("--unit", "pio1", "--role", "leader")["role"], "leader")

    def test_mqtt_defaults_to_the_config_and_can_be_overridden(self) -> None:
        self.assertEqual(self.parse("--unit", "pio1")["mqtt"], ("10.0.0.1", 1884))
        self.assertEqual(self.parse("--unit", "pio1", "--mqtt", "127.0.0.1:2000")["mqtt"], ("127.0.0.1", 2000))
        self.assertEqual(self.parse("--unit", "pio1", "--pigpio", "pi:9999")["pigpio"], ("pi", 9999))

    def test_bad_options_are_usage_errors(self) -> None:
        for args, words in [
            (("--role", "boss"), "--role must be leader or worker"),
            (("--mqtt", "host:notaport"), "notaport"),
            (("--mqtt", "host:70000"), "70000"),
            (("--pigpio", ""), ""),
        ]:
            with self.assertRaises(UsageError) as caught:
                self.parse("--unit", "pio1", *args)
            self.assertIn(words, str(caught.exception))

    def test_malformed_config_names_file_and_line(self) -> None:
        (self.data_dir / "unit_config.ini").write_text("[ui]\nport=1\nport=2\n")
        with self.assertRaises(UsageError) as caught:
            self.parse("--unit", "pio1")
        self.assertIn("unit_config.ini, line 3", str(caught.exception))

    def test_bad_security_settings_stop_start_up(self) -> None:
        cases = [
            ("unit_config.ini", "[auth]\nrequire=yes\n", "[auth] require must be one of off, dangerous, all"),
            ("unit_config.ini", "[auth]\nrequire=all\n", "needs a cluster secret"),
            ("unit_config.ini", "[cluster.security]\nsign_reads=perhaps\n", "sign_reads must be true or false"),
            ("cluster_secret", "too short", "at least 32"),
            ("credentials.json", "[]", "not a credentials file"),
        ]
        for name, text, words in cases:
            (self.data_dir / name).write_text(text)
            with self.assertRaises(UsageError) as caught:
                self.parse("--unit", "pio1")
            self.assertIn(words, str(caught.exception))
            (self.data_dir / name).unlink()
        self.parse("--unit", "pio1")

    def test_bad_hardware_settings_stop_start_up(self) -> None:
        cases = [
            ("[hardware]\nmodel=pioreactor_99ml\n", "not a known model"),
            ("[hardware]\nhat_version=new\n", "hat_version must look like 1.2"),
            ("[hardware]\nheater_max_duty=150\n", "heater_max_duty is a percentage"),
            ("[hardware]\npump_max_seconds=long\n", "pump_max_seconds must be a number"),
            ("[PWM]\n5=stirring\n", "channel 5 is the heater's"),
            ("[PWM]\n1=waste\n", "no channel for stirring"),
            ("[PWM]\n2=stirring\n", "stirring on channels 1 and 2"),
            ("[PWM]\n7=media\n2=nothing\n", "media must be on channel 1-4, not '7'"),
        ]
        for text, words in cases:
            (self.data_dir / "unit_config.ini").write_text(text)
            with self.assertRaises(UsageError) as caught:
                self.parse("--unit", "pio1")
            self.assertIn(words, str(caught.exception))


class ServiceTreeTests(SynchronousTestCase):
    def build(self, role: str) -> tuple[list[str], object]:
        service = build_unit(self, role)
        return [child.name for child in service], service.getServiceNamed("http")

    def test_leader_tree(self) -> None:
        names, http = self.build("leader")
        self.assertEqual(names, ["database", "hardware", "heater_guard", "mqtt", "ingest", "local_cache", "jobs", "tasks", "fanout", "http"])
        site = http.factory
        self.assertIsInstance(site, ApplianceSite)
        self.assertFalse(site.displayTracebacks)
        paths = {info.path for info in site.resource.routes()}
        self.assertIn("/api/experiments", paths)
        self.assertIn("/unit_api/health", paths)

    def test_worker_tree_has_no_leader_parts(self) -> None:
        names, http = self.build("worker")
        self.assertEqual(names, ["hardware", "heater_guard", "mqtt", "local_cache", "jobs", "tasks", "fanout", "http"])
        paths = {info.path for info in http.factory.resource.routes()}
        self.assertEqual({p for p in paths if p.startswith("/api")}, set())
        self.assertIn("/unit_api/task_results/<task_id>", paths)
