"""pigpiod's socket framing: 16-byte requests (plus a p3-byte extension), 16-byte replies, 12-byte reports.

Numbers are pigpio 1.78's (``pigpio.py``); the client packs native order, which is
little-endian on every Pi and x86, so we always use ``<``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import attrs

HEADER = struct.Struct("<IIII")
REPLY = struct.Struct("<IIIi")
REPORT = struct.Struct("<HHII")

#: Largest extension we buffer; pigpiod's own limit is of this order, and a bigger p3 is garbage.
MAX_EXTENSION = 65536


class Cmd(IntEnum):
    """The command numbers the simulator answers (pigpio.py ``_PI_CMD_*``)."""

    MODES = 0
    MODEG = 1
    PUD = 2
    READ = 3
    WRITE = 4
    PWM = 5
    PRS = 6
    PFS = 7
    WDOG = 9
    BR1 = 10
    TICK = 16
    NB = 19
    NC = 21
    PRG = 22
    PFG = 23
    PRRG = 24
    I2CO = 54
    I2CC = 55
    I2CRD = 56
    I2CWD = 57
    I2CRS = 59
    I2CWS = 60
    I2CRB = 61
    I2CWB = 62
    I2CRW = 63
    I2CWW = 64
    I2CRI = 67
    I2CWI = 68
    GDC = 83
    HP = 86
    FG = 97
    NOIB = 99


class Err(IntEnum):
    """pigpio's error codes (``PI_*`` in pigpio.py) that the simulator answers."""

    BAD_USER_GPIO = -2
    BAD_GPIO = -3
    BAD_MODE = -4
    BAD_LEVEL = -5
    BAD_PUD = -6
    BAD_DUTYCYCLE = -8
    BAD_WDOG_TIMEOUT = -15
    BAD_DUTYRANGE = -21
    NO_HANDLE = -24
    BAD_HANDLE = -25
    BAD_FLAGS = -77
    BAD_I2C_BUS = -74
    BAD_I2C_ADDR = -75
    BAD_PARAM = -81
    I2C_WRITE_FAILED = -82
    I2C_READ_FAILED = -83
    UNKNOWN_COMMAND = -88
    NOT_PWM_GPIO = -92
    NOT_HPWM_GPIO = -95
    BAD_HPWM_FREQ = -96
    BAD_HPWM_DUTY = -97
    BAD_FILTER = -125


#: Commands whose positive result is followed by that many data bytes.
DATA_REPLIES = frozenset({Cmd.I2CRD, Cmd.I2CRI})

#: Report flags (pigpio.py ``NTFY_FLAGS_*``).
FLAG_WATCHDOG = 0x20
FLAG_KEEPALIVE = 0x40


class FramingError(Exception):
    """The peer sent something that cannot be a pigpio request; the connection must close."""


@attrs.frozen
class Request:
    cmd: int
    p1: int
    p2: int
    p3: int
    ext: bytes = b""

    def ext_uint32(self) -> int | None:
        """The one uint32 most extended commands carry, or None when the client sent too few bytes."""
        if len(self.ext) < 4:
            return None
        value: int = struct.unpack_from("<I", self.ext)[0]
        return value


@attrs.define
class RequestParser:
    """Cuts a byte stream into requests; keeps a partial request until the rest arrives."""

    _buffer: bytearray = attrs.field(factory=bytearray)

    def feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        requests: list[Request] = []
        while len(self._buffer) >= HEADER.size:
            cmd, p1, p2, p3 = HEADER.unpack_from(self._buffer)
            if p3 > MAX_EXTENSION:
                raise FramingError(f"command {cmd} announces a {p3}-byte extension")
            end = HEADER.size + p3
            if len(self._buffer) < end:
                break
            requests.append(Request(cmd, p1, p2, p3, bytes(self._buffer[HEADER.size : end])))
            del self._buffer[:end]
        return requests


def encode_reply(request: Request, result: int, data: bytes = b"") -> bytes:
    """Echo cmd, p1, p2 with the 32-bit result, then the data bytes of a positive data reply.

    Errors are negative int32s, but TICK and BR1 answer with all 32 bits (a tick
    past 2**31 µs, GPIO 31's level): those go out as the int32 with the same bits.
    """
    signed = result - (1 << 32) if result >= 1 << 31 else result
    return REPLY.pack(request.cmd, request.p1, request.p2, signed) + data


def encode_report(seqno: int, flags: int, tick: int, levels: int) -> bytes:
    return REPORT.pack(seqno & 0xFFFF, flags, tick & 0xFFFFFFFF, levels & 0xFFFFFFFF)
