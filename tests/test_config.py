from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.config import Config, ConfigError


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def write(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def test_defaults_alone(self) -> None:
        config = Config.load(self.dir)
        self.assertEqual(config.get_int("ui", "port"), 80)
        self.assertEqual(config.get_int("limits", "json_body_bytes"), 1048576)

    def test_unit_file_wins_over_shared_file_and_case_is_kept(self) -> None:
        self.write("config.ini", "[ui]\nport=8080\n[PWM]\nStir=1\n")
        self.write("unit_config.ini", "[ui]\nport=9090\n")
        config = Config.load(self.dir)
        self.assertEqual(config.get_int("ui", "port"), 9090)
        self.assertEqual(config.get("PWM", "Stir"), "1")
        self.assertEqual(config.get("PWM", "stir"), None)

    def test_typed_getters_refuse_bad_values(self) -> None:
        self.write("config.ini", "[x]\nn=abc\nb=maybe\ne=\n")
        config = Config.load(self.dir)
        with self.assertRaisesRegex(ConfigError, r"\[x\] n must be an integer"):
            config.get_int("x", "n")
        with self.assertRaisesRegex(ConfigError, r"\[x\] b must be true or false"):
            config.get_bool("x", "b")
        with self.assertRaisesRegex(ConfigError, r"\[x\] e is not set"):
            config.get_str("x", "e")
        self.write("config.ini", "[x]\nb=Yes\nf=2.5\n")
        config = Config.load(self.dir)
        self.assertTrue(config.get_bool("x", "b"))
        self.assertEqual(config.get_float("x", "f"), 2.5)

    def test_malformed_file_names_file_and_line(self) -> None:
        cases = {
            "[a]\nk=1\n[a]\n": r"unit_config.ini, line 3: duplicate section \[a\]",
            "[a]\nk=1\nk=2\n": r"unit_config.ini, line 3: duplicate option 'k'",
            "k=1\n": r"unit_config.ini, line 1: a setting before any \[section\]",
            "[a]\nk=1\n=5\n": r"unit_config.ini, line 3: cannot parse '=5'",
        }
        for text, pattern in cases.items():
            self.write("unit_config.ini", text)
            with self.assertRaisesRegex(ConfigError, pattern):
                Config.load(self.dir)
