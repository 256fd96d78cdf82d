"""The ingest service: batching, acknowledgements after commit, bad messages, backpressure, and a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance.ingest.service import (
    IngestService,
    IngestSettings,
    ingest_client_id,
)
from pioreactor_appliance.ingest.topics import TOPIC_FILTERS
from pioreactor_appliance.mqtt import Message, MqttClient
from pioreactor_appliance.store.database import Database

from ..helpers import start_database
from ..mosquitto import Broker, start_mosquitto

T = "2026-01-05T12:00:00.123Z"
WAIT = 10.0


def rate(value: float) -> bytes:
    return json.dumps({"growth_rate": value, "timestamp": T}).encode()


RATE_TOPIC = "pioreactor/pio1/exp1/growth_rate_calculating/growth_rate"


async def barrier(db: Database) -> None:
    """Writes run in order on one thread, so once this one is back, every earlier batch has been handled."""
    await db.run(lambda conn: None)


async def rates(db: Database) -> list[float]:
    rows = await db.read(lambda conn: conn.execute("SELECT rate FROM growth_rates ORDER BY rowid").fetchall())
    return [r["rate"] for r in rows]


@define
class FakeSubscriber:
    """The part of MqttClient the ingest uses, with deliveries made by the test."""

    subscriptions: dict[str, tuple[int, Callable[[Message], None]]] = field(factory=dict)
    acked: list[Message] = field(factory=list)
    connected: bool = True
    session: int = 1
    reading: bool = True
    running: bool = False
    mid: int = 0

    def subscribe(self, topic_filter: str, callback: Callable[[Message], None], qos: int = 1) -> None:
        self.subscriptions[topic_filter] = (qos, callback)

    def startService(self) -> None:
        self.running = True

    def stopService(self) -> Deferred[None]:
        self.running = False
        return succeed(None)

    def ack(self, message: Message) -> bool:
        self.acked.append(message)
        return True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def deliver(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Message:
        self.mid += 1
        message = Message(topic, payload, qos, retain, self.mid, self.session)
        _, callback = self.subscriptions["pioreactor/+/+/growth_rate_calculating/growth_rate"]
        callback(message)
        return message


@define
class FlakyDatabase:
    """Fails the first ``failures`` batches as a whole, as a full disk would."""

    db: Database
    failures: int

    def run_without_foreign_keys(self, fn: Any, *args: Any) -> Deferred[Any]:
        if self.failures > 0:
            self.failures -= 1
            return fail(OSError("database or disk is full"))
        return self.db.run_without_foreign_keys(fn, *args)


class BatchingTests(TestCase):
    async def start(self, db: Any = None, **settings: Any) -> tuple[IngestService, FakeSubscriber, Database, Clock]:
        real = await start_database(self)
        broker, clock = FakeSubscriber(), Clock()
        service = IngestService(broker, db(real) if db else real, clock, IngestSettings(**{"batch_size": 3, "flush_interval": 1.0, "idle_flush": 0.1, **settings}))  # type: ignore[arg-type]
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        self.assertEqual(set(broker.subscriptions), set(TOPIC_FILTERS))
        self.assertEqual({qos for qos, _ in broker.subscriptions.values()}, {1})
        return service, broker, real, clock

    async def test_a_full_batch_is_written_at_once_and_acknowledged_after_the_commit(self) -> None:
        service, broker, db, _clock = await self.start()
        sent = [broker.deliver(RATE_TOPIC, rate(0.1)), broker.deliver(RATE_TOPIC, rate(0.2))]
        await barrier(db)
        self.assertEqual((await rates(db), broker.acked), ([], []))
        sent.append(broker.deliver(RATE_TOPIC, rate(0.3)))
        await barrier(db)
        self.assertEqual(await rates(db), [0.1, 0.2, 0.3])
        self.assertEqual(broker.acked, sent)
        self.assertEqual((service.counters.rows_stored, service.counters.batches), (3, 1))

    async def test_a_steady_stream_is_written_every_flush_interval(self) -> None:
        _service, broker, db, clock = await self.start(batch_size=100)
        sent = []
        for i in range(40):  # one message every 50 ms: never idle for 100 ms
            sent.append(broker.deliver(RATE_TOPIC, rate(i)))
            clock.advance(0.05)
            await barrier(db)
            if broker.acked:
                break
        self.assertGreaterEqual(clock.seconds(), 1.0)
        self.assertLessEqual(clock.seconds(), 1.15)
        self.assertEqual(await rates(db), [float(i) for i in range(len(sent))])
        self.assertEqual(broker.acked, sent)

    async def test_a_partial_batch_is_written_once_the_stream_pauses(self) -> None:
        """The broker may be waiting for our acknowledgements (its in-flight window is full)."""
        _service, broker, db, clock = await self.start(batch_size=100)
        sent = [broker.deliver(RATE_TOPIC, rate(0.1))]
        clock.advance(0.05)
        sent.append(broker.deliver(RATE_TOPIC, rate(0.2)))
        clock.advance(0.1)
        await barrier(db)
        self.assertEqual(await rates(db), [])  # a message came since the first tick
        clock.advance(0.1)
        await barrier(db)
        self.assertEqual((await rates(db), broker.acked), ([0.1, 0.2], sent))

    async def test_bad_messages_are_counted_and_their_neighbours_stored(self) -> None:
        service, broker, db, clock = await self.start(batch_size=100)
        naive_log = json.dumps({"message": "m", "level": "INFO", "task": "t", "timestamp": "2026-01-05 12:00:00", "source": "app"})
        sent = [
            broker.deliver(RATE_TOPIC, rate(0.1)),
            broker.deliver(RATE_TOPIC, b"{oops"),
            broker.deliver(RATE_TOPIC, json.dumps({"growth_rate": "fast", "timestamp": T}).encode()),
            broker.deliver("pioreactor/pio1/exp1/logs/app/info", naive_log.encode()),
            broker.deliver(RATE_TOPIC, rate(0.9), retain=True),  # stored when first published
            broker.deliver(RATE_TOPIC, b""),
            broker.deliver(RATE_TOPIC, rate(0.2)),
        ]
        clock.advance(1.0)
        await barrier(db)
        self.assertEqual(await rates(db), [0.1, 0.2])
        self.assertEqual(broker.acked, sent)  # bad ones too, in order: the broker must not send them again
        c = service.counters
        self.assertEqual((c.received, c.rows_stored, c.malformed, c.logs_without_timezone, c.skipped), (7, 2, 2, 1, 2))
        part = service.part()
        self.assertTrue(part["ok"])
        self.assertIn("2 malformed, 1 logs without a timezone dropped", part["state"])

    async def test_too_many_waiting_messages_pause_reading_until_stored(self) -> None:
        _service, broker, db, clock = await self.start(batch_size=100, max_pending=4)
        for i in range(3):
            broker.deliver(RATE_TOPIC, rate(i))
        self.assertTrue(broker.reading)
        broker.deliver(RATE_TOPIC, rate(3))
        self.assertFalse(broker.reading)
        clock.advance(1.0)
        await barrier(db)
        self.assertTrue(broker.reading)
        self.assertEqual(await rates(db), [0.0, 1.0, 2.0, 3.0])

    async def test_a_failed_batch_is_kept_unacknowledged_and_retried(self) -> None:
        service, broker, db, clock = await self.start(db=lambda real: FlakyDatabase(real, 2))
        sent = [broker.deliver(RATE_TOPIC, rate(i)) for i in range(3)]
        await barrier(db)
        self.assertEqual((await rates(db), broker.acked), ([], []))
        part = service.part()
        self.assertFalse(part["ok"])
        self.assertIn("disk is full", part["state"])
        clock.advance(1.0)  # the first retry fails too; the next waits twice as long
        await barrier(db)
        clock.advance(1.0)
        await barrier(db)
        self.assertEqual(await rates(db), [])
        clock.advance(1.0)
        await barrier(db)
        self.assertEqual((await rates(db), broker.acked), ([0.0, 1.0, 2.0], sent))
        self.assertEqual(service.counters.failed_batches, 2)
        self.assertTrue(service.part()["ok"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

    async def test_messages_from_an_earlier_connection_are_left_to_the_broker(self) -> None:
        _service, broker, db, clock = await self.start()
        broker.deliver(RATE_TOPIC, rate(0.1))
        broker.session = 2  # reconnected: the broker sends the unacknowledged message again
        again = broker.deliver(RATE_TOPIC, rate(0.1))
        clock.advance(1.0)
        await barrier(db)
        self.assertEqual((await rates(db), broker.acked), ([0.1], [again]))

    async def test_stopping_stores_what_was_received_first(self) -> None:
        service, broker, db, _clock = await self.start(batch_size=100)
        sent = [broker.deliver(RATE_TOPIC, rate(i)) for i in range(2)]
        await service.stopService()
        self.assertEqual((await rates(db), broker.acked), ([0.0, 1.0], sent))
        self.assertFalse(broker.running)
        broker.deliver(RATE_TOPIC, rate(5))  # after the stop: left for the broker to send again
        await barrier(db)
        self.assertEqual((await rates(db), len(broker.acked)), ([0.0, 1.0], 2))


async def until(condition: Callable[[], Deferred[bool]], what: str) -> None:
    deadline = reactor.seconds() + WAIT
    while not await condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


class OnBrokerTests(TestCase):
    """A real mosquitto: rows appear, and nothing is lost across a restart of the ingest."""

    def client(self, broker: Broker, client_id: str, **kwargs: Any) -> MqttClient:
        client = MqttClient(reactor, broker.host, broker.port, client_id, min_backoff=0.05, max_backoff=0.2, **kwargs)
        return client

    async def ingest(self, broker: Broker, db: Any) -> IngestService:
        mqtt = self.client(broker, ingest_client_id("leader"), clean_session=False, manual_ack=True)
        service = IngestService(mqtt, db, reactor, IngestSettings(batch_size=50, flush_interval=0.02, max_pending=1000))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        await subscribed(mqtt)
        return service

    async def publisher(self, broker: Broker) -> MqttClient:
        client = self.client(broker, "publisher")
        client.startService()
        self.addCleanup(client.stopService)
        await client.when_connected()
        return client

    async def stored(self, db: Database, n: int) -> None:
        async def enough() -> bool:
            return len(await rates(db)) >= n

        await until(enough, f"{n} rows")

    async def test_published_messages_become_rows(self) -> None:
        broker = await start_mosquitto(reactor, self)
        db = await start_database(self)
        service = await self.ingest(broker, db)
        publisher = await self.publisher(broker)
        await publisher.publish("pioreactor/pio1/exp1/temperature_automation/temperature", json.dumps({"timestamp": T, "temperature": 30.5}), qos=2)
        line = {"message": "hello", "level": "INFO", "task": "monitor", "timestamp": T, "source": "app"}
        await publisher.publish("pioreactor/leader/$experiment/logs/app/info", json.dumps(line), qos=1)
        await gatherResults([publisher.publish(RATE_TOPIC, rate(i), qos=2) for i in range(100)])
        await self.stored(db, 100)

        async def others() -> bool:
            temps = await db.read(lambda conn: conn.execute("SELECT temperature_c FROM temperature_readings").fetchall())
            logs = await db.read(lambda conn: conn.execute("SELECT experiment, message FROM logs").fetchall())
            return temps == [{"temperature_c": 30.5}] and logs == [{"experiment": "$experiment", "message": "hello"}]

        await until(others, "the temperature and the log line")
        self.assertEqual(await rates(db), list(range(100)))
        self.assertEqual(service.counters.malformed, 0)

    async def test_nothing_is_lost_across_a_restart(self) -> None:
        broker = await start_mosquitto(reactor, self)
        db = await start_database(self)
        first = await self.ingest(broker, db)
        publisher = await self.publisher(broker)
        await gatherResults([publisher.publish(RATE_TOPIC, rate(i), qos=2) for i in range(20)])
        await self.stored(db, 20)
        await first.stopService()
        # The leader is down: QoS 1 and 2 messages wait in its session on the broker.
        await publisher.publish(RATE_TOPIC, rate(100), qos=1)
        for i in range(101, 150):
            await publisher.publish(RATE_TOPIC, rate(i), qos=2 if i % 2 else 1)
        second = await self.ingest(broker, db)
        await self.stored(db, 70)
        await deferLater(reactor, 0.2, lambda: None)  # anything sent twice would have arrived by now
        self.assertEqual(await rates(db), [*range(20), *range(100, 150)])
        self.assertEqual(second.counters.rows_stored, 50)

    async def test_messages_received_but_not_committed_are_delivered_again(self) -> None:
        """A leader that dies between receipt and commit: nothing was acknowledged, so the broker still has it."""
        broker = await start_mosquitto(reactor, self)
        db = await start_database(self)
        await (await self.ingest(broker, db)).stopService()  # the session and its subscriptions exist
        publisher = await self.publisher(broker)
        failing = await self.ingest(broker, FlakyDatabase(db, 1_000_000))
        for i in range(30):
            await publisher.publish(RATE_TOPIC, rate(i), qos=2)

        async def all_failed() -> bool:
            # The broker sends at most max_inflight_messages (20) unacknowledged ones.
            return failing.counters.received >= 20 and failing.counters.failed_batches > 0

        await until(all_failed, "the messages to reach the failing ingest")
        await broker.stop()  # the connection dies with the messages unacknowledged
        await failing.stopService()
        await broker.start()
        await self.ingest(broker, db)
        await self.stored(db, 30)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(await rates(db), list(range(30)))
        self.assertTrue(self.flushLoggedErrors(OSError))


async def subscribed(mqtt: MqttClient) -> None:
    """Wait until the broker has the ingest's subscriptions: it handles one connection's packets in order."""
    got: Deferred[None] = Deferred()

    def probe(message: Message) -> None:
        mqtt.ack(message)
        if not got.called:
            got.callback(None)

    mqtt.subscribe("ready/ingest", probe, qos=1)
    await mqtt.when_connected()
    await mqtt.publish("ready/ingest", b"ready", qos=1)
    await got.addTimeout(WAIT, reactor)
    mqtt.unsubscribe("ready/ingest")
