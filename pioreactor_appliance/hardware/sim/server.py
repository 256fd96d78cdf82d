"""The pigpiod socket on the reactor: one protocol per connection, a command or a report stream."""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pioreactor_appliance.hardware.sim.daemon import Daemon
from pioreactor_appliance.hardware.sim.protocol import (
    Cmd,
    FramingError,
    Request,
    RequestParser,
    encode_reply,
)

log = Logger()


class PigpioProtocol(Protocol):
    """Answers each request with one write; after NOIB only reports go out and only NC is heard."""

    factory: PigpioFactory

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.parser = RequestParser()
        self.report_handle: int | None = None

    def connectionMade(self) -> None:
        self.factory.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            requests = self.parser.feed(data)
        except FramingError as e:
            log.warn("closing a pigpio connection that sent garbage: {why}", why=str(e))
            self.transport.loseConnection()
            return
        for request in requests:
            if self.transport.disconnecting:
                return
            if self.report_handle is not None:
                if request.cmd == Cmd.NC and request.p1 == self.report_handle:
                    self.daemon.notifications.close(self.report_handle)
            elif request.cmd == Cmd.NOIB:
                self._open_reports(request)
            else:
                self._answer(request)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.report_handle is not None:
            self.daemon.notifications.close(self.report_handle)
        self.daemon.i2c.release(self)
        self.factory.connections.discard(self)

    def _answer(self, request: Request) -> None:
        try:
            result = self.daemon.answer(request, self)
        except Exception:
            log.failure("simulated pigpiod failed on command {cmd}", cmd=request.cmd)
            self.transport.loseConnection()
            return
        if isinstance(result, bytes):
            self.transport.write(encode_reply(request, len(result), result))
        else:
            self.transport.write(encode_reply(request, result))

    def _open_reports(self, request: Request) -> None:
        handle = self.daemon.notifications.open(self.transport.write, self._reports_closed)
        self.transport.write(encode_reply(request, handle))
        if handle >= 0:
            self.report_handle = handle

    def _reports_closed(self) -> None:
        self.report_handle = None
        self.transport.loseConnection()


class PigpioFactory(Factory):
    """Keeps its open connections so a stop can close them and tests can wait for them to go."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.connections: set[PigpioProtocol] = set()

    def buildProtocol(self, addr: object) -> PigpioProtocol:
        protocol = PigpioProtocol(self.daemon)
        protocol.factory = self
        return protocol

