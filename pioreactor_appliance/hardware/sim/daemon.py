"""What pigpiod answers to each command, on one simulated Pi (board, I2C, notification handles).

A handler returns an int result, or bytes for a data reply (result = their length).
NOIB is not here: it changes what the connection is, so the server handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import attrs
from twisted.internet.interfaces import IReactorTime

from pioreactor_appliance.hardware.sim.board import Board
from pioreactor_appliance.hardware.sim.i2c import MAX_BLOCK, MAX_DEVICE_READ, I2c
from pioreactor_appliance.hardware.sim.notify import Notifications
from pioreactor_appliance.hardware.sim.protocol import Cmd, Err, Request

Handler = Callable[[Request, Hashable], "int | bytes"]


def _byte(result: int | bytes) -> int:
    return result if isinstance(result, int) else result[0]


def _word(result: int | bytes) -> int:
    """SMBus words arrive least significant byte first."""
    return result if isinstance(result, int) else result[0] | result[1] << 8


@attrs.define
class Daemon:
    board: Board
    i2c: I2c
    notifications: Notifications
    _table: dict[int, Handler] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._table = self._handlers()

    @classmethod
    def create(cls, clock: IReactorTime) -> Daemon:
        board = Board(clock)
        return cls(board, I2c(), Notifications(clock, board))

    def answer(self, request: Request, owner: Hashable) -> int | bytes:
        handler = self._table.get(request.cmd)
        if handler is None:
            return Err.UNKNOWN_COMMAND
        return handler(request, owner)

    def stop(self) -> None:
        self.notifications.stop()
        self.board.stop()

    def _handlers(self) -> dict[int, Handler]:
        b, i2c = self.board, self.i2c
        return {
            Cmd.MODES: lambda r, o: b.set_mode(r.p1, r.p2),
            Cmd.MODEG: lambda r, o: b.get_mode(r.p1),
            Cmd.PUD: lambda r, o: b.set_pull(r.p1, r.p2),
            Cmd.READ: lambda r, o: b.read(r.p1),
            Cmd.WRITE: lambda r, o: b.write(r.p1, r.p2),
            Cmd.PWM: lambda r, o: b.set_duty(r.p1, r.p2),
            Cmd.PRS: lambda r, o: b.set_range(r.p1, r.p2),
            Cmd.PFS: lambda r, o: b.set_frequency(r.p1, r.p2),
            Cmd.GDC: lambda r, o: b.get_duty(r.p1),
            Cmd.PRG: lambda r, o: b.get_range(r.p1),
            Cmd.PFG: lambda r, o: b.get_frequency(r.p1),
            Cmd.PRRG: lambda r, o: b.get_real_range(r.p1),
            Cmd.WDOG: lambda r, o: b.set_watchdog(r.p1, r.p2),
            Cmd.FG: lambda r, o: b.set_glitch_filter(r.p1, r.p2),
            Cmd.BR1: lambda r, o: b.bank1(),
            Cmd.TICK: lambda r, o: b.tick(),
            Cmd.HP: self._hardware_pwm,
            Cmd.NB: lambda r, o: self.notifications.begin(r.p1, r.p2),
            Cmd.NC: lambda r, o: self.notifications.close(r.p1),
            Cmd.I2CO: self._i2c_open,
            Cmd.I2CC: lambda r, o: i2c.close(r.p1),
            Cmd.I2CRD: self._i2c_read_device,
            Cmd.I2CWD: lambda r, o: i2c.write(r.p1, r.ext) if r.ext else Err.BAD_PARAM,
            Cmd.I2CRS: lambda r, o: _byte(i2c.read(r.p1, b"", 1)),
            Cmd.I2CWS: lambda r, o: i2c.write(r.p1, bytes([r.p2])) if r.p2 <= 0xFF else Err.BAD_PARAM,
            Cmd.I2CRB: lambda r, o: _byte(i2c.read(r.p1, bytes([r.p2]), 1)) if r.p2 <= 0xFF else Err.BAD_PARAM,
            Cmd.I2CWB: self._i2c_write_byte_data,
            Cmd.I2CRW: lambda r, o: _word(i2c.read(r.p1, bytes([r.p2]), 2)) if r.p2 <= 0xFF else Err.BAD_PARAM,
            Cmd.I2CWW: self._i2c_write_word_data,
            Cmd.I2CRI: self._i2c_read_block,
            Cmd.I2CWI: self._i2c_write_block,
        }

    def _hardware_pwm(self, request: Request, owner: Hashable) -> int:
        duty = request.ext_uint32()
        return Err.BAD_PARAM if duty is None else self.board.hardware_pwm(request.p1, request.p2, duty)

    def _i2c_open(self, request: Request, owner: Hashable) -> int:
        flags = request.ext_uint32()
        return Err.BAD_PARAM if flags is None else self.i2c.open(request.p1, request.p2, flags, owner)

    def _i2c_read_device(self, request: Request, owner: Hashable) -> int | bytes:
        if not 1 <= request.p2 <= MAX_DEVICE_READ:
            return Err.BAD_PARAM
        return self.i2c.read(request.p1, b"", request.p2)

    def _i2c_write_byte_data(self, request: Request, owner: Hashable) -> int:
        value = request.ext_uint32()
        if value is None or value > 0xFF or request.p2 > 0xFF:
            return Err.BAD_PARAM
        return self.i2c.write(request.p1, bytes([request.p2, value]))

    def _i2c_write_word_data(self, request: Request, owner: Hashable) -> int:
        value = request.ext_uint32()
        if value is None or value > 0xFFFF or request.p2 > 0xFF:
            return Err.BAD_PARAM
        return self.i2c.write(request.p1, bytes([request.p2, value & 0xFF, value >> 8]))

    def _i2c_read_block(self, request: Request, owner: Hashable) -> int | bytes:
        count = request.ext_uint32()
        if count is None or not 1 <= count <= MAX_BLOCK or request.p2 > 0xFF:
            return Err.BAD_PARAM
        return self.i2c.read(request.p1, bytes([request.p2]), count)

    def _i2c_write_block(self, request: Request, owner: Hashable) -> int:
        if not 1 <= len(request.ext) <= MAX_BLOCK or request.p2 > 0xFF:
            return Err.BAD_PARAM
        return self.i2c.write(request.p1, bytes([request.p2]) + request.ext)
