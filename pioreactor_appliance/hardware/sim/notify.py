"""Notification handles: connections that NOIB turned into report streams.

The handle table is shared by every connection, as in pigpiod: the client opens the handle on
its report socket but sets the monitored bits (NB) on its command socket.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pioreactor_appliance.hardware.sim.board import Board
from pioreactor_appliance.hardware.sim.protocol import (
    FLAG_KEEPALIVE,
    FLAG_WATCHDOG,
    Err,
    encode_report,
)

NOTIFY_SLOTS = 32
KEEPALIVE_SECONDS = 60.0


@attrs.define
class NotifyHandle:
    send: Callable[[bytes], None]
    disconnect: Callable[[], None]
    keepalive: IDelayedCall
    bits: int = 0
    seqno: int = 0


@attrs.define
class Notifications:
    """Sends a report to every handle whose monitored bits changed; a keep-alive after a quiet minute."""

    clock: IReactorTime
    board: Board
    handles: dict[int, NotifyHandle] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.board.observers.append(self)

    def open(self, send: Callable[[bytes], None], disconnect: Callable[[], None]) -> int:
        """A new handle (the lowest free one), or NO_HANDLE when all slots are taken."""
        free = [h for h in range(NOTIFY_SLOTS) if h not in self.handles]
        if not free:
            return Err.NO_HANDLE
        handle = free[0]
        keepalive = self.clock.callLater(KEEPALIVE_SECONDS, self._keepalive, handle)
        self.handles[handle] = NotifyHandle(send, disconnect, keepalive)
        return handle

    def begin(self, handle: int, bits: int) -> int:
        entry = self.handles.get(handle)
        if entry is None:
            return Err.BAD_HANDLE
        entry.bits = bits
        return 0

    def close(self, handle: int) -> int:
        """Forget the handle and end its report stream."""
        entry = self.handles.pop(handle, None)
        if entry is None:
            return Err.BAD_HANDLE
        if entry.keepalive.active():
            entry.keepalive.cancel()
        entry.disconnect()
        return 0

    def stop(self) -> None:
        for handle in list(self.handles):
            self.close(handle)

    def level_changed(self, tick: int, levels: int, changed: int) -> None:
        for entry in list(self.handles.values()):
            if entry.bits & changed:
                self._report(entry, 0, tick, levels)

    def watchdog_expired(self, tick: int, gpio: int) -> None:
        for entry in list(self.handles.values()):
            if entry.bits & (1 << gpio):
                self._report(entry, FLAG_WATCHDOG | gpio, tick, self.board.bank1())

    def _keepalive(self, handle: int) -> None:
        entry = self.handles[handle]
        entry.keepalive = self.clock.callLater(KEEPALIVE_SECONDS, self._keepalive, handle)
        self._report(entry, FLAG_KEEPALIVE, self.board.tick(), self.board.bank1())

    def _report(self, entry: NotifyHandle, flags: int, tick: int, levels: int) -> None:
        entry.send(encode_report(entry.seqno, flags, tick, levels))
        entry.seqno = (entry.seqno + 1) & 0xFFFF
        if entry.keepalive.active():
            entry.keepalive.reset(KEEPALIVE_SECONDS)
