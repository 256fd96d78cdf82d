"""Finding workers by mDNS: one DNS-SD browse for ``_pio-worker._tcp.local``, without blocking the reactor.

Workers advertise ``<hostname>._pio-worker._tcp.local`` (systemd/avahi). The
leader sends one PTR query from an ephemeral UDP port: RFC 6762 §6.7 calls
that a legacy unicast query, and responders (avahi) answer it by unicast to
that port, so the leader needs neither port 5353 nor multicast membership.
It collects the answers for a short window, then closes the port.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.names import dns
from twisted.python.failure import Failure

from .config import Config, ConfigError
from .mqtt import parse_hostport

SERVICE = b"_pio-worker._tcp.local"
MDNS_PORT = 5353


class MdnsUnavailable(Exception):
    """The query could not be sent (no multicast route, a firewall): discovery cannot work here."""


def instance_name(owner: bytes) -> str | None:
    """``pio05`` for ``pio05._pio-worker._tcp.local``; None for a name of another service or not UTF-8."""
    suffix = b"." + SERVICE
    if not owner.lower().endswith(suffix) or len(owner) == len(suffix):
        return None
    try:
        return owner[: -len(suffix)].decode("utf-8")
    except UnicodeDecodeError:
        return None


def instances_in(message: dns.Message) -> set[str]:
    """The service instances a response names, by PTR (answers) or SRV (often in the additional records)."""
    found: set[str] = set()
    for record in [*message.answers, *message.authority, *message.additional]:
        if record.type == dns.PTR and record.name.name.lower() == SERVICE:
            name = instance_name(record.payload.name.name)
        elif record.type == dns.SRV:
            name = instance_name(record.name.name)
        else:
            continue
        if name is not None:
            found.add(name)
    return found


class _Answers(DatagramProtocol):
    """Keeps the instances named by responses to the query ``query_id``; anything else is ignored."""

    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.instances: set[str] = set()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message = dns.Message()
        try:
            message.fromStr(datagram)
        except Exception:  # any datagram may arrive on the port; a broken one is not an answer
            return
        if message.answer and message.id == self.query_id:
            self.instances |= instances_in(message)


def browse_query(query_id: int) -> bytes:
    message = dns.Message(id=query_id)
    message.queries = [dns.Query(SERVICE, dns.PTR, dns.IN)]
    return message.toStr()


async def browse(udp: IReactorUDP, clock: IReactorTime, address: tuple[str, int], window: float) -> set[str]:
    """Send one browse query to ``address``; the instance names answered within ``window`` seconds.

    Raises MdnsUnavailable when the query cannot be sent at all.
    """
    query_id = random.randint(1, 0xFFFF)
    answers = _Answers(query_id)
    port = udp.listenUDP(0, answers)
    try:
        try:
            port.write(browse_query(query_id), address)
        except (OSError, MessageLengthError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise MdnsUnavailable(f"cannot send an mDNS query to {address[0]}:{address[1]}: {reason}") from None
        await deferLater(clock, window)
    finally:
        await port.stopListening()
    return answers.instances


@define
class Discovery:
    """Browses for workers, one browse at a time: callers during a browse share its answer."""

    udp: IReactorUDP
    clock: IReactorTime
    address: tuple[str, int]
    window: float
    _waiters: list[Deferred[set[str]]] | None = field(default=None, init=False)

    @classmethod
    def from_config(cls, reactor: Any, config: Config) -> Discovery:
        text = config.get_str("cluster.discovery", "mdns_address")
        try:
            host, port = parse_hostport(text, MDNS_PORT)
            ipaddress.IPv4Address(host)
        except ValueError as e:
            raise ConfigError(f"[cluster.discovery] mdns_address must be IPV4:PORT ({e})") from None
        return cls(reactor, reactor, (host, port), config.get_float("cluster.discovery", "seconds"))

    def scan(self) -> Deferred[set[str]]:
        """The instance names one browse finds; a browse already under way is joined, not repeated."""
        waiter: Deferred[set[str]] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        Deferred.fromCoroutine(browse(self.udp, self.clock, self.address, self.window)).addBoth(self._finish)
        return waiter

    def _finish(self, result: set[str] | Failure) -> None:
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(set(result))
