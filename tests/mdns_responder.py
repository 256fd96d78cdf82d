"""A fake mDNS responder on loopback: it answers legacy unicast browse queries as avahi does, by unicast to the sender."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.names import dns
from twisted.trial.unittest import TestCase

from pioreactor_appliance.mdns import SERVICE


def ptr(instance: bytes) -> dns.RRHeader:
    return dns.RRHeader(SERVICE, dns.PTR, dns.IN, 120, dns.Record_PTR(instance + b"." + SERVICE))


def srv(instance: bytes) -> dns.RRHeader:
    return dns.RRHeader(instance + b"." + SERVICE, dns.SRV, dns.IN, 120, dns.Record_SRV(0, 0, 80, instance + b".local"))


class FakeResponder(DatagramProtocol):
    """Answers each browse with ``replies``: a list of datagrams (bytes, sent as they are) or record lists.

    ``answer_id`` changes the answer's id from the query's (to test that strays are ignored); ``queries``
    records each query received.
    """

    def __init__(self, replies: list[bytes | list[dns.RRHeader] | tuple[list[dns.RRHeader], list[dns.RRHeader]]]) -> None:
        self.replies = replies
        self.queries: list[dns.Message] = []
        self.answer_id: int | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        query = dns.Message()
        query.fromStr(datagram)
        self.queries.append(query)
        for reply in self.replies:
            if isinstance(reply, bytes):
                self.transport.write(reply, addr)
                continue
            answers, additional = reply if isinstance(reply, tuple) else (reply, [])
            message = dns.Message(id=query.id if self.answer_id is None else self.answer_id, answer=1, auth=1)
            message.queries = query.queries  # a legacy unicast answer repeats the question (RFC 6762 §6.7)
            message.answers = answers
            message.additional = additional
            self.transport.write(message.toStr(), addr)


def start_responder(case: TestCase, replies: list[Any]) -> tuple[FakeResponder, tuple[str, int]]:
    """A responder listening on 127.0.0.1, stopped when the test ends; and its address."""
    responder = FakeResponder(replies)
    port = reactor.listenUDP(0, responder, interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return responder, ("127.0.0.1", port.getHost().port)


def unused_udp_address(case: TestCase) -> tuple[str, int]:
    """A loopback UDP address nothing answers on: bound and never read until the test ends."""
    port = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    port.stopReading()
    case.addCleanup(port.stopListening)
    return ("127.0.0.1", port.getHost().port)
