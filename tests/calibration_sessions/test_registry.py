"""Which protocols a unit offers, from its config."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.calibration_sessions.od_standards import od_devices
from pioreactor_appliance.calibration_sessions.protocol import SessionSettings
from pioreactor_appliance.calibration_sessions.registry import core_protocols
from pioreactor_appliance.config import Config, ConfigError


def angles(**channels: str) -> Config:
    return Config.defaults().with_overrides(
        [("od_config.photodiode_channel", c, a) for c, a in channels.items()]
    )


class RegistryTests(SynchronousTestCase):
    def test_od_devices_follow_the_configured_angles(self) -> None:
        self.assertEqual(od_devices(Config.defaults()), ["od90"])
        self.assertEqual(
            od_devices(angles(**{"1": "45", "3": "135"})),
            ["od45", "od90", "od135", "od"],
        )
        self.assertEqual(
            od_devices(angles(**{"2": "180"})), []
        )  # the reference has no od180 device
        self.assertEqual(
            od_devices(angles(**{"2": "bogus"})), []
        )  # an unusable OD config offers none

    def test_sorted_by_device_priority_title(self) -> None:
        listed = [p.listing() for p in core_protocols(angles(**{"1": "45"}))]
        self.assertEqual(
            [p["target_device"] for p in listed],
            sorted(p["target_device"] for p in listed),
        )
        self.assertEqual(listed[0]["id"], "alt_media_pump_duration_based")
        self.assertIn("alt media pump", listed[0]["description"])


class SettingsTests(SynchronousTestCase):
    def test_defaults_and_bad_values(self) -> None:
        settings = SessionSettings.from_config(Config.defaults())
        self.assertEqual(settings.pump_durations, (5.0, 10.0, 15.0, 20.0))
        for key, value in (
            ("pump_durations_seconds", "5"),
            ("pump_durations_seconds", "5,500"),
            ("stirring_duty_cycles", "10,x"),
            ("stirring_duty_cycles", "10,120"),
            ("od_settle_seconds", "-1"),
        ):
            config = Config.defaults().with_overrides(
                [("calibration_sessions", key, value)]
            )
            self.assertRaises(ConfigError, SessionSettings.from_config, config)
