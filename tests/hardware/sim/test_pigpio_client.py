"""pigpio's own client against the simulated daemon on a loopback port.

The client blocks, so every call runs in a thread while the reactor serves; the daemon's
time is a Clock, so ticks are exact.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pigpio
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.sim import model as m
from pioreactor_appliance.hardware.sim.devices import WordRegisters
from pioreactor_appliance.hardware.sim.model import build_pioreactor
from pioreactor_appliance.hardware.sim.protocol import Err
from pioreactor_appliance.hardware.sim.server import PigpioFactory


class RealClientTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.daemon, self.model = build_pioreactor(self.clock, seed=3)
        self.device = WordRegisters(registers={0x00: 0x1234, 0x01: 0x8583})
        self.daemon.i2c.attach(1, 0x40, self.device)
        self.factory = PigpioFactory(self.daemon)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.wait_until, lambda: not self.factory.connections)
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.daemon.stop)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("condition never held")

    async def connect(self) -> pigpio.pi:
        pi = await deferToThread(pigpio.pi, "127.0.0.1", self.port.getHost().port, False)
        self.assertTrue(pi.connected)
        self.addCleanup(deferToThread, pi.stop)
        return pi

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await deferToThread(fn, *args)

    async def fails(self, code: int, fn: Callable[..., Any], *args: Any) -> None:
        with self.assertRaises(pigpio.error) as raised:
            await self.call(fn, *args)
        self.assertEqual(raised.exception.value, pigpio.error_text(code))

    async def test_pwm_settings_read_back_with_pigpio_quantisation(self) -> None:
        pi = await self.connect()
        self.assertEqual(await self.call(pi.set_PWM_frequency, 18, 16), 20)
        self.assertEqual(await self.call(pi.set_PWM_range, 18, 100), 10000)
        await self.call(pi.set_PWM_dutycycle, 18, 40)
        self.assertEqual(await self.call(pi.get_PWM_dutycycle, 18), 40)
        self.assertEqual(await self.call(pi.get_PWM_range, 18), 100)
        self.assertEqual(await self.call(pi.get_PWM_real_range, 18), 10000)
        self.assertEqual(await self.call(pi.get_PWM_frequency, 18), 20)
        self.assertEqual(await self.call(pi.set_PWM_frequency, 17, 200), 200)
        self.assertEqual(self.daemon.board.duty_fraction(18), 0.4)
        await self.call(pi.hardware_PWM, 13, 250, 250_000)
        self.assertEqual(await self.call(pi.get_PWM_frequency, 13), 250)
        self.assertEqual(self.daemon.board.duty_fraction(13), 0.25)
        await self.fails(Err.BAD_DUTYCYCLE, pi.set_PWM_dutycycle, 18, 101)
        await self.fails(Err.BAD_USER_GPIO, pi.set_PWM_dutycycle, 32, 1)
        await self.fails(Err.BAD_DUTYRANGE, pi.set_PWM_range, 18, 40001)
        await self.fails(Err.NOT_HPWM_GPIO, pi.hardware_PWM, 17, 250, 1)
        await self.fails(Err.BAD_HPWM_DUTY, pi.hardware_PWM, 12, 250, 1_000_001)

    async def test_levels_modes_bank_and_tick(self) -> None:
        pi = await self.connect()
        await self.call(pi.set_mode, 23, pigpio.OUTPUT)
        await self.call(pi.set_pull_up_down, 4, pigpio.PUD_UP)
        await self.call(pi.write, 23, 1)
        self.assertEqual(await self.call(pi.read, 23), 1)
        self.assertEqual(await self.call(pi.get_mode, 23), pigpio.OUTPUT)
        self.assertEqual(await self.call(pi.read_bank_1), 1 << 23)
        self.clock.advance(2**32 / 1e6 + 1.5)  # the tick wraps like pigpiod's
        self.assertEqual(await self.call(pi.get_current_tick), 1_500_000)
        await self.fails(Err.BAD_LEVEL, pi.write, 23, 2)
        await self.fails(Err.BAD_PUD, pi.set_pull_up_down, 4, 3)
        await self.fails(Err.BAD_GPIO, pi.read, 54)

    async def test_edge_callbacks_arrive_with_levels_and_ticks(self) -> None:
        pi = await self.connect()
        seen: list[tuple[int, int, int]] = []
        lock = threading.Lock()

        def record(gpio: int, level: int, tick: int) -> None:
            with lock:
                seen.append((gpio, level, tick))

        either = await self.call(pi.callback, 21, pigpio.EITHER_EDGE, record)
        await self.call(pi.callback, 4, pigpio.FALLING_EDGE, record)
        for t, gpio, level in [(1.0, 21, 1), (1.01, 21, 0), (1.02, 4, 1), (1.03, 4, 0), (1.04, 21, 1)]:
            self.clock.advance(t - self.clock.seconds())
            self.daemon.board.drive(gpio, level)
        await self.wait_until(lambda: len(seen) == 4)
        self.assertEqual(seen, [(21, 1, 1_000_000), (21, 0, 1_010_000), (4, 0, 1_030_000), (21, 1, 1_040_000)])
        await self.call(either.cancel)
        self.daemon.board.drive(21, 0)
        self.daemon.board.drive(4, 1)
        self.daemon.board.drive(4, 0)
        await self.wait_until(lambda: len(seen) == 5)
        self.assertEqual(seen[-1][:2], (4, 0))

    async def test_i2c_register_transfers(self) -> None:
        pi = await self.connect()
        handle = await self.call(pi.i2c_open, 1, 0x40)
        self.assertEqual(await self.call(pi.i2c_read_i2c_block_data, handle, 0x00, 2), (2, bytearray(b"\x12\x34")))
        await self.call(pi.i2c_write_i2c_block_data, handle, 0x01, [0x83, 0x02])
        self.assertEqual(self.device.registers[0x01], 0x8302)
        self.assertEqual(await self.call(pi.i2c_read_word_data, handle, 0x01), 0x0283)
        await self.call(pi.i2c_write_word_data, handle, 0x01, 0xBBAA)
        self.assertEqual(self.device.registers[0x01], 0xAABB)
        await self.call(pi.i2c_write_byte, handle, 0x00)
        self.assertEqual(await self.call(pi.i2c_read_device, handle, 3), (3, bytearray(b"\x12\x34\xff")))
        self.assertEqual(await self.call(pi.i2c_read_byte, handle), 0x12)
        self.assertEqual(await self.call(pi.i2c_read_byte_data, handle, 0x01), 0xAA)
        await self.call(pi.i2c_write_device, handle, b"\x01\x00\x07")
        self.assertEqual(self.device.registers[0x01], 0x0007)
        await self.fails(Err.I2C_WRITE_FAILED, pi.i2c_write_byte_data, handle, 0x05, 1)  # no such register
        self.assertEqual(await self.call(pi.i2c_read_i2c_block_data, handle, 0x00, 33), (Err.BAD_PARAM, ""))
        absent = await self.call(pi.i2c_open, 1, 0x50)
        self.assertEqual(await self.call(pi.i2c_read_device, absent, 2), (Err.I2C_READ_FAILED, ""))
        await self.fails(Err.I2C_WRITE_FAILED, pi.i2c_write_byte, absent, 0)
        await self.call(pi.i2c_close, handle)
        await self.fails(Err.BAD_HANDLE, pi.i2c_read_byte, handle)
        await self.fails(Err.BAD_I2C_BUS, pi.i2c_open, 2, 0x40)
        await self.fails(Err.BAD_I2C_ADDR, pi.i2c_open, 1, 0x80)

    async def test_garbage_and_truncated_input_leave_the_server_serving(self) -> None:
        def abuse() -> None:
            for payload in [b"\xff" * 16, b"\x05\x00", b"\x00" * 15, bytes(range(256)) * 3]:
                with socket.create_connection(("127.0.0.1", self.port.getHost().port)) as s:
                    s.sendall(payload)

        await deferToThread(abuse)
        pi = await self.connect()
        await self.call(pi.write, 23, 1)
        self.assertEqual(await self.call(pi.read, 23), 1)

    async def test_a_photodiode_reading_flows_from_the_model_to_the_client(self) -> None:
        pi = await self.connect()
        hat = await self.call(pi.i2c_open, 1, 0x2C)
        await self.call(pi.i2c_write_byte_data, hat, 0, 255)  # IR LED (channel A) full on
        self.model.od = 2.0
        count, data = await self.call(pi.i2c_read_i2c_block_data, hat, 3 + 4, 2)
        volts = int.from_bytes(bytes(data), "little") / (4095 * 32) * 3.3
        self.assertEqual(count, 2)
        self.assertLess(abs(volts - (m.PD_DARK_VOLTS + m.PD2_VOLTS_PER_OD * 2.0)), 0.002)
        self.assertEqual(await self.call(pi.i2c_read_i2c_block_data, hat, 0x08, 2), (2, bytearray([4, 0])))
        tmp = await self.call(pi.i2c_open, 1, 0x4F)
        count, data = await self.call(pi.i2c_read_i2c_block_data, tmp, 0, 2)
        self.assertEqual(((data[0] << 4) + (data[1] >> 4)) * 0.0625, m.AMBIENT_C)
