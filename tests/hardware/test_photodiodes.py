"""The photodiode ADC adapters: which one a model gets, and a burst read through each on the simulator."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.connection import PigpioConnection
from pioreactor_appliance.hardware.photodiodes import (
    Ads1114Photodiodes,
    HatAdcPhotodiodes,
    photodiodes_for,
)
from pioreactor_appliance.hardware.sensors import Rp2040
from pioreactor_appliance.hardware.sim.model import (
    PD1_VOLTS,
    PD_DARK_VOLTS,
    build_pioreactor,
)
from pioreactor_appliance.hardware.sim.server import PigpioFactory


class ChoiceTests(TestCase):
    def test_each_model_gets_the_adc_the_reference_reads_it_with(self) -> None:
        connection = PigpioConnection(reactor, "127.0.0.1", 1)
        rp2040 = Rp2040(connection)
        v15 = photodiodes_for(connection, "pioreactor_40ml", "1.5", rp2040)
        self.assertIsInstance(v15, Ads1114Photodiodes)
        self.assertEqual(v15.channels, (1, 2))
        xr = photodiodes_for(connection, "pioreactor_40ml_XR", "1.5", rp2040)
        self.assertEqual(xr.channels, (1, 2, 3, 4))
        older = photodiodes_for(connection, "pioreactor_20ml", "1.1", rp2040)
        self.assertIsInstance(older, HatAdcPhotodiodes)
        self.assertIsNone(photodiodes_for(connection, "pioreactor_20ml", "1.0", None))


class BurstOnSimulatorTests(TestCase):
    timeout = 30

    async def test_both_adcs_read_the_same_lit_reference(self) -> None:
        daemon, model = build_pioreactor(reactor, seed=3)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            PigpioFactory(daemon)
        )
        self.addCleanup(port.stopListening)
        connection = PigpioConnection(reactor, "127.0.0.1", port.getHost().port)
        connection.startService()
        self.addCleanup(connection.stopService)
        while not connection.connected:
            await deferLater(reactor, 0.01)
        model.leds[0] = 255  # IR at full intensity
        expected = PD_DARK_VOLTS + PD1_VOLTS
        ads = Ads1114Photodiodes(connection, {1: 0x48, 2: 0x49})
        await ads.prepare()
        hat = HatAdcPhotodiodes(connection, Rp2040(connection))
        for adc in (ads, hat):
            samples = await adc.burst([1, 2], rounds=5, seconds=0.02)
            self.assertEqual(len(samples[1]), 5)
            for volts in samples[1]:
                self.assertLess(abs(volts - expected), 0.002, adc.name)
        with self.assertRaises(ValueError):
            ads.burst([3], rounds=5, seconds=0.02)
        with self.assertRaises(ValueError):
            hat.burst([1], rounds=5, seconds=1.0)
