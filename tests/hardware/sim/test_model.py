"""The simulated Pioreactor's physics, on a Clock, read the way the drivers read it."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.hardware.sim import model as m
from pioreactor_appliance.hardware.sim.__main__ import parse
from pioreactor_appliance.hardware.sim.devices import RP2040_ADDRESS, TMP1075_ADDRESS
from pioreactor_appliance.hardware.sim.model import build_pioreactor


class FallingEdges:
    """A board observer that keeps the ticks of falling edges on one GPIO."""

    def __init__(self, gpio: int) -> None:
        self.bit = 1 << gpio
        self.ticks: list[int] = []

    def level_changed(self, tick: int, levels: int, changed: int) -> None:
        if changed & self.bit and not levels & self.bit:
            self.ticks.append(tick)

    def watchdog_expired(self, tick: int, gpio: int) -> None:
        pass


class ModelTests(SynchronousTestCase):
    def build(self, seed: int = 1, speed: float = 1.0) -> None:
        self.clock = Clock()
        self.daemon, self.model = build_pioreactor(self.clock, seed, speed)
        self.model.start()
        self.addCleanup(self.model.stop)
        self.addCleanup(self.daemon.stop)
        self.board = self.daemon.board

    def run_for(self, seconds: float) -> None:
        self.clock.pump([0.01] * round(seconds / 0.01))

    def read_adc(self, channel: int) -> float:
        handle = self.daemon.i2c.open(1, RP2040_ADDRESS, 0, self)
        data = self.daemon.i2c.read(handle, bytes([channel + 4]), 2)
        assert isinstance(data, bytes)
        return int.from_bytes(data, "little") / (4095 * 32) * 3.3

    def test_stirring_duty_sets_rpm_and_hall_edges_measure_it(self) -> None:
        self.build()
        edges = FallingEdges(21)
        self.board.observers.append(edges)
        self.board.set_range(17, 100)
        self.board.set_duty(17, 60)
        self.run_for(10)
        target = m.MAX_RPM * (0.6 - m.STALL_DUTY) / (1 - m.STALL_DUTY)
        self.assertLess(abs(self.model.rpm - target), 0.05 * target)
        settled = edges.ticks[-20:]
        rpm = 60 * 1e6 * (len(settled) - 1) / (settled[-1] - settled[0])
        self.assertLess(abs(rpm - target), 0.05 * target)

    def test_below_the_stall_duty_nothing_turns(self) -> None:
        self.build()
        edges = FallingEdges(21)
        self.board.observers.append(edges)
        self.board.set_range(17, 100)
        self.board.set_duty(17, 15)
        self.run_for(5)
        self.assertEqual((self.model.rpm, edges.ticks), (0.0, []))

    def test_heater_warms_the_vial_towards_its_settled_temperature(self) -> None:
        self.build(speed=100)
        self.board.set_range(18, 100)
        self.board.set_duty(18, 50)
        self.run_for(60)  # 6000 model seconds: ten time constants
        handle = self.daemon.i2c.open(1, TMP1075_ADDRESS, 0, self)
        data = self.daemon.i2c.read(handle, b"\x00", 2)
        assert isinstance(data, bytes)
        celsius = ((data[0] << 4) + (data[1] >> 4)) * 0.0625
        self.assertLess(abs(celsius - (m.AMBIENT_C + 0.5 * m.HEATER_GAIN_C)), 0.1)

    def test_culture_grows_and_the_photodiodes_follow_od_and_ir(self) -> None:
        self.build(speed=100)
        self.assertLess(self.read_adc(3), 0.005)  # IR off: dark
        self.model.leds[0] = 255
        before = self.read_adc(3) - m.PD_DARK_VOLTS
        self.run_for(72)  # two model hours: one doubling, a little less near the start of a logistic curve
        self.assertLess(abs((self.read_adc(3) - m.PD_DARK_VOLTS) / before - 2), 0.1)
        self.assertLess(abs(self.read_adc(2) - (m.PD_DARK_VOLTS + m.PD1_VOLTS)), 0.002)

    def test_media_dilutes_and_waste_stops_at_the_tube(self) -> None:
        self.build()
        od = self.model.od
        self.board.set_duty(13, 255)
        self.run_for(2)
        self.board.set_duty(13, 0)
        self.assertAlmostEqual(self.model.volume_ml, m.INITIAL_VOLUME_ML + 2, places=1)
        self.assertLess(self.model.od, od * 0.9)
        self.board.hardware_pwm(12, 250, 1_000_000)
        self.run_for(5)
        self.assertAlmostEqual(self.model.volume_ml, m.WASTE_TUBE_ML)

    def test_a_seed_makes_the_run_repeatable(self) -> None:
        readings = []
        for seed in (7, 7, 8):
            self.build(seed)
            self.board.set_duty(17, 200)
            self.model.leds[0] = 100
            self.run_for(3)
            readings.append((self.model.rpm, self.model.pd2_volts()))
            self.model.stop()
        self.assertEqual(readings[0], readings[1])
        self.assertNotEqual(readings[0], readings[2])


class CommandLineTests(SynchronousTestCase):
    def test_options_and_bad_values(self) -> None:
        args = parse(["--port", "9000", "--seed", "3", "--speed", "60", "--count", "2"])
        self.assertEqual((args.port, args.seed, args.speed, args.count), (9000, 3, 60.0, 2))
        for bad in (["--count", "0"], ["--speed", "0"], ["--port", "x"]):
            self.assertRaises(SystemExit, parse, bad)
