"""Tells systemd the unit is up, and keeps telling it the reactor is alive (sd_notify).

Under ``Type=notify`` with ``WatchdogSec=``, systemd restarts the service when the
``WATCHDOG=1`` pings stop. They come from a ``LoopingCall`` on the reactor, so a
reactor that hangs (a blocking call, a livelock) stops them and gets restarted,
while a slow but working one keeps its experiment running.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def _address(notify_socket: str) -> str | bytes:
    """``@name`` is Linux's abstract namespace, written with a leading NUL on the wire."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``WATCHDOG_USEC``, as systemd advises; ``None`` when the watchdog is off or is another process's."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        interval = int(usec) / 2_000_000
    except ValueError:
        interval = 0.0
    if interval <= 0:
        log.warn("WATCHDOG_USEC={usec!r} is not a positive number of microseconds; not feeding the watchdog", usec=usec)
        return None
    return interval


@define(eq=False)
class SystemdNotifier(Service):
    """Sends ``READY=1`` when started (last in the tree, so the HTTP port is open), then a ping per interval."""

    address: str | bytes
    watchdog_interval: float | None
    clock: IReactorTime
    _socket: socket.socket = field(init=False, factory=lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    _pings: LoopingCall | None = field(init=False, default=None)
    _failed: bool = field(init=False, default=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], clock: IReactorTime, pid: int | None = None) -> SystemdNotifier | None:
        """``None`` when not started by systemd with ``Type=notify`` (tests, scripts/cluster, twistd by hand)."""
        notify_socket = environ.get("NOTIFY_SOCKET")
        if not notify_socket:
            return None
        return cls(_address(notify_socket), _watchdog_interval(environ, os.getpid() if pid is None else pid), clock)

    def __attrs_post_init__(self) -> None:
        self._socket.setblocking(False)  # a datagram to a full or gone socket is dropped, never waited on

    def notify(self, message: str) -> None:
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError as e:
            if not self._failed:  # once per outage, not once per ping
                log.warn("could not tell systemd {message!r}: {error}", message=message, error=e)
            self._failed = True
        else:
            self._failed = False

    def startService(self) -> None:
        super().startService()
        self.notify("READY=1\nSTATUS=serving")
        if self.watchdog_interval is not None:
            self._pings = LoopingCall(self.notify, "WATCHDOG=1")
            self._pings.clock = self.clock
            self._pings.start(self.watchdog_interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._pings is not None and self._pings.running:
            self._pings.stop()
        self.notify("STOPPING=1")
        self._socket.close()
