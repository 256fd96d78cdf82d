"""The mDNS browse: real UDP sockets on loopback against a fake responder; the window on a test clock where time matters."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.names import dns
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config, ConfigError, parse_text
from pioreactor_appliance.mdns import (
    Discovery,
    MdnsUnavailable,
    browse,
    instance_name,
    instances_in,
)

from .cluster import ClusterTestCase
from .mdns_responder import ptr, srv, start_responder, unused_udp_address


async def until(condition: object, what: str) -> None:
    """Wait (real time, bounded) until ``condition()`` is true."""
    for _ in range(500):
        if condition():  # type: ignore[operator]
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"never: {what}")


class ParsingTests(TestCase):
    def test_instance_names(self) -> None:
        self.assertEqual(instance_name(b"pio05._pio-worker._tcp.local"), "pio05")
        self.assertEqual(instance_name(b"PIO05._PIO-WORKER._TCP.LOCAL"), "PIO05")
        self.assertIsNone(instance_name(b"pio05._http._tcp.local"))
        self.assertIsNone(instance_name(b"._pio-worker._tcp.local"))
        self.assertIsNone(instance_name(b"\xff._pio-worker._tcp.local"))

    def test_ptr_and_srv_records_in_any_section_name_instances(self) -> None:
        message = dns.Message(answer=1)
        message.answers = [ptr(b"pio01"), dns.RRHeader(b"pio01.local", dns.A, dns.IN, 120, dns.Record_A("10.0.0.1"))]
        message.additional = [srv(b"pio02"), dns.RRHeader(b"_other._tcp.local", dns.PTR, dns.IN, 120, dns.Record_PTR(b"x._other._tcp.local"))]
        self.assertEqual(instances_in(message), {"pio01", "pio02"})

    def test_config(self) -> None:
        discovery = Discovery.from_config(reactor, Config.defaults())
        self.assertEqual((discovery.address, discovery.window), (("224.0.0.251", 5353), 2.0))
        for bad in ("mdns.local:5353", "224.0.0.251:99999", "[::1]:5353"):
            config = Config.merge([("x", parse_text(f"[cluster.discovery]\nmdns_address={bad}\nseconds=1\n", "x"))])
            with self.assertRaises(ConfigError):
                Discovery.from_config(reactor, config)


class BrowseTests(TestCase):
    async def test_collects_answers_until_the_window_ends(self) -> None:
        responder, address = start_responder(self, [b"not dns", [ptr(b"pio05"), ptr(b"pio05")], ([], [srv(b"pio06")])])
        clock = Clock()
        result = Deferred.fromCoroutine(browse(reactor, clock, address, 2.0))
        await until(lambda: len(responder.queries) == 1 and clock.getDelayedCalls(), "the query was sent")
        query = responder.queries[0]
        self.assertEqual([(q.name.name, q.type) for q in query.queries], [(b"_pio-worker._tcp.local", dns.PTR)])
        self.assertNotEqual(query.id, 0)
        await deferLater(reactor, 0.1)  # the answers arrive on real sockets
        self.assertFalse(result.called)
        clock.advance(2.0)
        self.assertEqual(await result, {"pio05", "pio06"})

    async def test_answers_to_another_query_are_ignored(self) -> None:
        responder, address = start_responder(self, [[ptr(b"pio05")]])
        responder.answer_id = 0
        self.assertEqual(await browse(reactor, reactor, address, 0.1), set())
        self.assertEqual(len(responder.queries), 1)

    async def test_silence_is_no_workers(self) -> None:
        self.assertEqual(await browse(reactor, reactor, unused_udp_address(self), 0.05), set())

    async def test_a_query_that_cannot_be_sent(self) -> None:
        for address, reason in ((("255.255.255.255", 5353), "Permission denied"), (("127.0.0.1", 0), "Invalid argument")):
            with self.assertRaises(MdnsUnavailable) as raised:
                await browse(reactor, Clock(), address, 1.0)
            self.assertIn(reason, str(raised.exception))


class SingleFlightTests(TestCase):
    async def test_concurrent_scans_share_one_query(self) -> None:
        responder, address = start_responder(self, [[ptr(b"pio05")]])
        clock = Clock()
        discovery = Discovery(reactor, clock, address, 1.0)
        first, second = discovery.scan(), discovery.scan()
        await until(lambda: responder.queries and clock.getDelayedCalls(), "the query was sent")
        await deferLater(reactor, 0.1)
        clock.advance(1.0)
        self.assertEqual((await first, await second), ({"pio05"}, {"pio05"}))
        self.assertEqual(len(responder.queries), 1)
        third = discovery.scan()  # the browse ended: a new one starts
        await until(lambda: len(responder.queries) == 2 and clock.getDelayedCalls(), "a second query was sent")
        clock.advance(1.0)
        await third

    async def test_every_waiter_gets_the_failure(self) -> None:
        discovery = Discovery(reactor, Clock(), ("255.255.255.255", 5353), 1.0)
        first, second = discovery.scan(), discovery.scan()
        for waiter in (first, second):
            with self.assertRaises(MdnsUnavailable):
                await waiter


class DiscoverEndToEndTests(ClusterTestCase):
    async def test_a_real_leader_lists_answering_workers_it_does_not_know(self) -> None:
        responder, (host, port) = start_responder(self, [[ptr(b"pio1"), ptr(b"pio9"), ptr(b"pio8")]])
        await self.start_cluster(["pio1"], config=f"[cluster.discovery]\nmdns_address={host}:{port}\nseconds=0.3\n")
        self.assertEqual(
            await self.call("GET", "leader", "/api/workers/discover", expect=200),
            [{"pioreactor_unit": "pio8"}, {"pioreactor_unit": "pio9"}],
        )

    async def test_the_clusters_default_is_a_quick_silent_browse(self) -> None:
        await self.start_cluster([])
        self.assertEqual(await self.call("GET", "leader", "/api/workers/discover", expect=200), [])
