"""Which drivers a unit gets, from its HAT version, model and [PWM] map."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.config import DEFAULTS, Config, parse_text
from pioreactor_appliance.hardware.connection import PigpioConnection
from pioreactor_appliance.hardware.sensors import Ads1115, Dac43608, Rp2040
from pioreactor_appliance.hardware.unit import Hardware, HardwareSettings


def config(text: str = "") -> Config:
    """The shipped defaults under ``text`` as a unit_config.ini."""
    return Config.merge([("defaults", parse_text(DEFAULTS.read_text(), "defaults")), ("unit", parse_text(text, "unit"))])


class HardwareTests(SynchronousTestCase):
    def build(self, text: str = "") -> Hardware:
        return Hardware.build(PigpioConnection(reactor, "127.0.0.1", 1), HardwareSettings.from_config(config(text)), Clock())

    def test_current_hat(self) -> None:
        hardware = self.build()
        self.assertIsInstance(hardware.rp2040, Rp2040)
        self.assertIs(hardware.leds, hardware.rp2040)
        self.assertIsNone(hardware.ads1115)
        self.assertEqual(hardware.stirring.gpio, 17)
        self.assertEqual({name: pump.gpio for name, pump in hardware.pumps.items()}, {"media": 13, "alt_media": 16, "waste": 12})
        self.assertEqual((hardware.heater.gpio, hardware.heater.max_duty, hardware.heater.disable_above), (18, 70.0, 80.0))

    def test_old_hat_and_another_pump_layout_and_model(self) -> None:
        hardware = self.build("[hardware]\nhat_version=1.0\nmodel=pioreactor_20ml_XR\nmodel_version=1.5\n[PWM]\n2=waste\n3=media\n4=alt_media\n")
        self.assertIsNone(hardware.rp2040)
        self.assertIsInstance(hardware.ads1115, Ads1115)
        self.assertIsInstance(hardware.leds, Dac43608)
        self.assertEqual({name: pump.gpio for name, pump in hardware.pumps.items()}, {"media": 16, "alt_media": 12, "waste": 13})
        self.assertEqual(hardware.heater.disable_above, 80.0)
