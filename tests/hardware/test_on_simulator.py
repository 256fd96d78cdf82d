"""The drivers through pigpio's own client against the simulated Pioreactor, on a real socket.

This is the issue's proof: more duty, more RPM; heater on, the vial warms; pumps dilute, OD falls.
The simulator runs on this reactor; pigpio's blocking client runs on the drivers' hardware thread.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.connection import PigpioConnection
from pioreactor_appliance.hardware.panel import Button
from pioreactor_appliance.hardware.sensors import Ads1114, Ads1115, Dac43608
from pioreactor_appliance.hardware.sim.daemon import Daemon
from pioreactor_appliance.hardware.sim.devices import Ads1115 as SimAds1115
from pioreactor_appliance.hardware.sim.devices import Dac43608 as SimDac43608
from pioreactor_appliance.hardware.sim.model import build_pioreactor
from pioreactor_appliance.hardware.sim.server import PigpioFactory
from pioreactor_appliance.hardware.unit import Hardware, HardwareSettings

PD1, PD2 = 2, 3  # the RP2040's photodiode channels on HAT 1.2


class OnSimulatorTests(TestCase):
    timeout = 60

    async def start(self, speed: float = 1.0) -> Hardware:
        daemon, self.model = build_pioreactor(reactor, seed=7, speed=speed)
        self.board = daemon.board
        self.model.start()
        self.addCleanup(self.model.stop)
        self.factory = PigpioFactory(daemon)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.addCleanup(port.stopListening)
        self.connection = PigpioConnection(reactor, "127.0.0.1", port.getHost().port)
        hardware = Hardware.build(self.connection, HardwareSettings.from_config(Config.defaults()), reactor)
        self.connection.startService()
        self.addCleanup(self.connection.stopService)
        for _ in range(400):
            if self.connection.connected:
                return hardware
            await deferLater(reactor, 0.01)
        self.fail("never connected to the simulator")

    async def rpm_after(self, hardware: Hardware, duty: float, seconds: float) -> float:
        await hardware.stirring.set_duty(duty)
        hardware.tachometer.reset()
        await deferLater(reactor, seconds)
        return hardware.tachometer.rpm()

    async def test_more_duty_more_rpm(self) -> None:
        hardware = await self.start()
        low = await self.rpm_after(hardware, 40, 2.5)
        high = await self.rpm_after(hardware, 80, 2.5)
        self.assertGreater(low, 200)
        self.assertGreater(high, low * 1.5)
        stopped = await self.rpm_after(hardware, 0, 5.0)  # the motor coasts down over a few seconds
        self.assertLess(stopped, low / 4)

    async def test_heater_on_the_vial_warms(self) -> None:
        hardware = await self.start(speed=600.0)  # the 600 s thermal constant becomes 1 s
        before = await hardware.temperature.read_celsius()
        await hardware.heater.set_duty(60)
        await deferLater(reactor, 1.5)
        after = await hardware.temperature.read_celsius()
        self.assertGreater(after, before + 5)
        await hardware.heater.off()

    async def test_ir_light_and_dilution_move_the_photodiodes(self) -> None:
        hardware = await self.start()
        dark = await hardware.leds.read_volts(PD2)
        await hardware.leds.set_led(0, 50)
        await deferLater(reactor, 0.3)
        reference = await hardware.leds.read_volts(PD1)
        lit = await hardware.leds.read_volts(PD2)
        self.assertGreater(reference, 0.1)
        self.assertGreater(lit, dark)
        await hardware.pumps["media"].run_for(3)
        await deferLater(reactor, 3.3)
        await hardware.pumps["waste"].run_for(4)
        await deferLater(reactor, 4.3)
        diluted = await hardware.leds.read_volts(PD2)
        self.assertLess(diluted, lit * 0.95)
        self.assertEqual([pump.duty for pump in hardware.pumps.values()], [0.0, 0.0, 0.0], "runs stopped on their own")

    async def test_a_lost_daemon_connection_is_noticed_retried_and_outputs_go_safe(self) -> None:
        hardware = await self.start()
        self.connection._heartbeat_seconds = 0.2
        self.connection._heartbeat.stop()
        self.connection._heartbeat.start(0.2, now=False)
        await hardware.stirring.set_duty(60)
        self.assertGreater(self.board.duty_fraction(17), 0.5)
        for protocol in list(self.factory.connections):
            protocol.transport.abortConnection()  # pigpiod keeps driving the pin; the client is gone
        self.assertGreater(self.board.duty_fraction(17), 0.5)
        for _ in range(400):  # the heartbeat notices, the connection comes back, outputs go safe first
            await deferLater(reactor, 0.02)
            if self.connection.connected and self.board.duty_fraction(17) == 0.0 and self.factory.connections:
                break
        self.assertTrue(self.connection.connected, "reconnected")
        self.assertEqual(self.board.duty_fraction(17), 0.0, "stirring put in its safe state on reconnection")
        await hardware.stirring.set_duty(30)  # and the drivers work again
        self.assertGreater(self.board.duty_fraction(17), 0.25)

    async def test_ads1114_led_and_button(self) -> None:
        hardware = await self.start()
        await hardware.leds.set_led(0, 60)
        ads = Ads1114(self.connection, 0x48)  # pd1 of a v1.5 model
        await ads.set_gain(1)
        reference = await ads.read_volts()
        self.assertLess(abs(reference - await hardware.leds.read_volts(PD1)), 0.01, "both ADCs read the same photodiode")
        self.assertGreater(reference, 0.1)
        await hardware.led.set(True)
        self.assertEqual(self.board.read(hardware.led.gpio), 1)
        presses: list[bool] = []
        arrived = Deferred()
        Button(self.connection, 4, lambda pressed: (presses.append(pressed), None if arrived.called else arrived.callback(None)))
        await self.connection.call(lambda pi: None)
        await deferLater(reactor, 0.05)
        self.board.drive(4, 1)
        await arrived
        self.assertEqual(presses[:1], [True])


async def serve_and_connect(case: TestCase, daemon: Daemon) -> PigpioConnection:
    """Serve ``daemon`` on a free loopback port and connect the drivers' client to it."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(PigpioFactory(daemon))
    case.addCleanup(port.stopListening)
    connection = PigpioConnection(reactor, "127.0.0.1", port.getHost().port)
    connection.startService()
    case.addCleanup(connection.stopService)
    for _ in range(400):
        if connection.connected:
            return connection
        await deferLater(reactor, 0.01)
    raise AssertionError("never connected to the simulator")


class Dac43608OnSimulatorTests(TestCase):
    async def test_old_hat_led_driver(self) -> None:
        daemon = Daemon.create(reactor)
        chip = SimDac43608()
        daemon.i2c.attach(1, 0x49, chip)
        connection = await serve_and_connect(self, daemon)
        await Dac43608(connection).set_led(2, 100)
        self.assertEqual(chip.intensity(2), 1.0)
        await Dac43608(connection).set_led(2, 20)
        self.assertAlmostEqual(chip.intensity(2), 51 / 255)


class Ads1115OnSimulatorTests(TestCase):
    async def test_each_input_is_read_through_the_mux(self) -> None:
        daemon = Daemon.create(reactor)
        daemon.i2c.attach(1, 0x48, SimAds1115(inputs=lambda n: [0.5, 1.0, 1.5, 2.0][n] if n >= 0 else -1.0))
        connection = await serve_and_connect(self, daemon)
        adc = Ads1115(connection)
        await adc.set_gain(1)  # ±4.096 V
        readings = [await adc.read_input(n) for n in range(4)]
        for got, expected in zip(readings, [0.5, 1.0, 1.5, 2.0], strict=True):
            self.assertLess(abs(got - expected), 0.001)
        with self.assertRaises(ValueError):
            adc.read_input(4)
