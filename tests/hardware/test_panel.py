"""The onboard LED (off when safe) and the button (edges become pressed/released)."""

from __future__ import annotations

import pigpio
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.panel import Button, OnboardLed

from .fakes import FakePi, connect_fake


class PanelTests(TestCase):
    async def test_led_and_button(self) -> None:
        pi = FakePi()
        connection = await connect_fake(self, pi)
        led = OnboardLed(connection, 23)
        presses: list[bool] = []
        button = Button(connection, 4, presses.append)
        await led.set(True)
        self.assertEqual(pi.calls[-2:], [("mode", 23, pigpio.OUTPUT), ("write", 23, 1)])
        await connection.call(lambda pi: None)
        self.assertEqual(pi.callbacks[0][:2], (4, pigpio.EITHER_EDGE))
        button._edge(4, 1, 100)
        button._edge(4, 0, 200)
        self.assertEqual(presses, [True, False])
        await connection.stopService()
        self.assertIn(("write", 23, 0), pi.calls[-5:])
        self.assertIn(("pud", 4, pigpio.PUD_DOWN), pi.calls[-5:])
