"""MqttClient against a real mosquitto on loopback, plus unit tests of the parts that need no broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pioreactor_appliance.mqtt import (
    ClientStopped,
    Message,
    MqttClient,
    NotConnected,
    QueueFull,
    Will,
    _PahoSocket,
    parse_hostport,
)

from .mosquitto import Broker, free_port, start_mosquitto

WAIT = 15.0  # seconds any single thing in these tests may take (a loaded 2-core CI machine included)


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll the condition on the reactor (never blocking it); fail the test if it stays false."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(reactor, 0.01)


async def settle(d: Deferred[Any], timeout: float = WAIT) -> Any:
    return await d.addTimeout(timeout, reactor)


class Inbox:
    """A subscription callback that records messages and the thread it ran on."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.on_reactor_thread: list[bool] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.on_reactor_thread.append(isInIOThread())

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.messages if m.topic == topic]

    async def wait_for(self, topic: str, payload: bytes) -> Message:
        await until(lambda: payload in self.payloads(topic), f"{payload!r} on {topic}")
        return next(m for m in self.messages if m.topic == topic and m.payload == payload)


class ParseHostportTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for text, expected in [
            ("broker", ("broker", 1883)),
            ("pio1.local:1884", ("pio1.local", 1884)),
            ("10.0.0.1:65535", ("10.0.0.1", 65535)),
            ("[::1]:1", ("::1", 1)),
            ("[fe80::1]", ("fe80::1", 8888)),
        ]:
            self.assertEqual(parse_hostport(text, 8888 if text == "[fe80::1]" else 1883), expected)

    def test_invalid_names_the_bad_part(self) -> None:
        for text, words in [
            ("", "host is empty"),
            (":1883", "host is empty"),
            ("host:", "bad port ''"),
            ("host:0", "bad port '0'"),
            ("host:65536", "bad port '65536'"),
            ("host:notaport", "notaport"),
            ("host:+1", "bad port '+1'"),
            (" host:1", "spaces"),
            ("::1", "brackets"),
            ("[::1", "[IPv6]:PORT"),
            ("[::1]1883", "[IPv6]:PORT"),
            ("[::1]:x", "bad port 'x'"),
        ]:
            with self.assertRaises(ValueError, msg=text) as caught:
                parse_hostport(text)
            self.assertIn(words, str(caught.exception))


class FakeReactor(MemoryReactorClock):
    """Fake time and fd sets; the "thread pool" runs the connect inline, so attempts are deterministic."""

    def getThreadPool(self) -> FakeReactor:
        return self

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            result = f(*args, **kwargs)
        except Exception:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class UnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        # Nothing listens on this port: every (blocking, loopback) connect is refused at once.
        self.client = MqttClient(self.reactor, "127.0.0.1", free_port(), "unit", min_backoff=0.5, max_backoff=3.0)

    def test_backoff_doubles_up_to_the_maximum_and_stop_cancels_it(self) -> None:
        self.client.startService()
        delays = []
        for _ in range(5):
            [call] = self.reactor.getDelayedCalls()
            delays.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
        self.assertEqual(delays, [0.5, 1.0, 2.0, 3.0, 3.0])
        self.assertFalse(self.client.connected)
        self.successResultOf(self.client.stopService())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_bad_arguments_raise_at_once(self) -> None:
        inbox = Inbox()
        for call in [
            lambda: self.client.publish("a/+/c", b""),
            lambda: self.client.publish("a/#", b""),
            lambda: self.client.publish("", b""),
            lambda: self.client.publish("a", b"", qos=3),
            lambda: self.client.subscribe("a/#/c", inbox),
            lambda: self.client.subscribe("a/b+", inbox),
            lambda: self.client.subscribe("a", inbox, qos=-1),
            lambda: self.client.publish("pioreactor/pio\x01/exp/x", b""),
            lambda: self.client.publish("pioreactor/pio\x85/exp/x", b""),
            lambda: self.client.publish("pioreactor/\ufffe/exp/x", b""),
            lambda: self.client.subscribe("a/\x00", inbox),
        ]:
            self.assertRaises(ValueError, call)

    def test_not_running_fails_publish_and_stop_fails_waiters(self) -> None:
        self.failureResultOf(self.client.publish("a", b"x", qos=1), ClientStopped)
        waiting = self.client.when_connected()
        self.assertNoResult(waiting)
        self.client.startService()
        self.failureResultOf(self.client.publish("a", b"x", qos=0), NotConnected)
        self.successResultOf(self.client.stopService())
        self.failureResultOf(waiting, ClientStopped)


class BrokerTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.broker: Broker = await start_mosquitto(reactor, self)

    def client(self, client_id: str, *, start: bool = True, **kwargs: Any) -> MqttClient:
        kwargs.setdefault("min_backoff", 0.05)
        kwargs.setdefault("max_backoff", 0.2)
        client = MqttClient(reactor, self.broker.host, self.broker.port, client_id, **kwargs)
        if start:
            client.startService()
        self.addCleanup(lambda: client.stopService() if client.running else None)
        return client

    async def connected_client(self, client_id: str, **kwargs: Any) -> MqttClient:
        client = self.client(client_id, **kwargs)
        await settle(client.when_connected())
        return client

    async def ready(self, client: MqttClient) -> None:
        """Wait until the broker has the client's subscriptions: it handles one connection's packets in order."""
        probe, topic = Inbox(), f"ready/{client.client_id}"
        client.subscribe(topic, probe)
        await settle(client.when_connected())
        await settle(client.publish(topic, b"ready", qos=1))
        await probe.wait_for(topic, b"ready")
        client.unsubscribe(topic)

    async def test_publish_all_qos_levels_and_receive_on_the_reactor_thread(self) -> None:
        client = self.client("a")
        inbox = Inbox()
        client.subscribe("t/#", inbox, qos=2)
        early = client.publish("t/early", b"held while connecting", qos=1)  # as Presence does on startup
        await settle(client.when_connected())
        self.assertNoResult(early)  # sent after the CONNACK and the SUBSCRIBE, so we receive it too
        self.assertTrue(client.connected)
        sent = [client.publish(f"t/{qos}", f"q{qos}", qos=qos) for qos in (0, 1, 2)]
        self.assertTrue(client._client.want_write(), "paho must leave writing to the reactor")
        self.assertFalse(any(d.called for d in sent))
        for d in [early, *sent]:
            self.assertIsNone(await settle(d))
        for qos in (0, 1, 2):
            message = await inbox.wait_for(f"t/{qos}", f"q{qos}".encode())
            self.assertEqual((message.qos, message.retain), (qos, False))
        await inbox.wait_for("t/early", b"held while connecting")
        self.assertTrue(all(inbox.on_reactor_thread))

    async def test_retained_message_reaches_a_late_subscriber(self) -> None:
        publisher = await self.connected_client("pub")
        await settle(publisher.publish("r/1", b"kept", qos=1, retain=True))
        inbox = Inbox()
        late = self.client("late")
        late.subscribe("r/+", inbox)
        message = await inbox.wait_for("r/1", b"kept")
        self.assertTrue(message.retain)
        self.assertTrue(late.connected)

    async def test_wildcards_match_like_the_broker(self) -> None:
        plus, hash_ = Inbox(), Inbox()
        for client_id, topic_filter, inbox in [("plus", "a/+/c", plus), ("hash", "a/#", hash_)]:
            subscriber = self.client(client_id)
            subscriber.subscribe(topic_filter, inbox)
            await self.ready(subscriber)
        publisher = await self.connected_client("pub")
        for topic in ["a/b/c", "a/x/y/c", "b/c", "a"]:
            await settle(publisher.publish(topic, b"m", qos=1))
        # A last message both filters match: each subscriber has its own connection, so each waits for it.
        await settle(publisher.publish("a/end/c", b"end", qos=1))
        await hash_.wait_for("a/end/c", b"end")
        await plus.wait_for("a/end/c", b"end")
        self.assertEqual([m.topic for m in plus.messages], ["a/b/c", "a/end/c"])
        self.assertEqual([m.topic for m in hash_.messages], ["a/b/c", "a/x/y/c", "a", "a/end/c"])

    async def test_a_failing_callback_is_logged_and_the_client_keeps_working(self) -> None:
        client = self.client("a")
        calls: list[Message] = []

        def broken(message: Message) -> None:
            calls.append(message)
            raise ZeroDivisionError("bad handler")

        inbox = Inbox()
        client.subscribe("bad", broken)
        client.subscribe("good", inbox)
        await settle(client.when_connected())
        await settle(client.publish("bad", b"1", qos=1))
        await until(lambda: len(calls) == 1, "the broken callback to run")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        await settle(client.publish("good", b"2", qos=1))
        await inbox.wait_for("good", b"2")
        self.assertTrue(client.connected)

    async def test_reconnects_after_broker_restart_resubscribes_and_sends_queued_qos1(self) -> None:
        client = self.client("a")
        inbox = Inbox()
        client.subscribe("s/#", inbox)
        await settle(client.when_connected())
        await self.broker.stop()
        await until(lambda: not client.connected, "the client to notice the broker is gone")
        queued = client.publish("s/queued", b"while away", qos=1)
        self.failureResultOf(client.publish("s/lost", b"qos0", qos=0), NotConnected)
        await deferLater(reactor, 0.3)  # a few failed attempts with backoff
        self.assertNoResult(queued)
        reconnected = client.when_connected()
        await self.broker.start()
        await settle(reconnected)
        await settle(queued)
        self.assertEqual(client._backoff, 0.05)
        # A clean session starts empty after the restart: receiving proves the subscription was renewed.
        await settle(client.publish("s/after", b"restart", qos=1))
        await inbox.wait_for("s/after", b"restart")
        await inbox.wait_for("s/queued", b"while away")

    async def test_will_is_published_when_the_connection_dies(self) -> None:
        watcher = Inbox()
        watcher_client = self.client("watcher")
        watcher_client.subscribe("will/#", watcher)
        await self.ready(watcher_client)
        dying = await self.connected_client("dying", will=Will("will/dying", b"lost", qos=1, retain=False))
        inbox = Inbox()
        dying.subscribe("back", inbox)
        # As if the network died: no DISCONNECT. Called as user code resumed by when_connected,
        # it also checks that no user code runs inside paho (whose callback lock would deadlock).
        dying._abort_connection()
        self.assertFalse(dying.connected)
        await watcher.wait_for("will/dying", b"lost")
        await settle(dying.when_connected())  # and it comes back by itself
        await settle(dying.publish("back", b"again", qos=1))
        await inbox.wait_for("back", b"again")

    async def test_no_will_after_a_clean_stop(self) -> None:
        watcher_client = self.client("watcher")
        watcher = Inbox()
        watcher_client.subscribe("will/#", watcher)
        await self.ready(watcher_client)
        leaving = await self.connected_client("leaving", will=Will("will/leaving", b"lost", qos=1, retain=False))
        await settle(leaving.stopService())
        # The broker handled the DISCONNECT before this later publish; a will would have come first.
        await settle(watcher_client.publish("will/sentinel", b"done", qos=1))
        await watcher.wait_for("will/sentinel", b"done")
        self.assertEqual(watcher.payloads("will/leaving"), [])

    async def test_stop_fails_pending_publishes_and_leaves_nothing_behind(self) -> None:
        client = await self.connected_client("a", max_queued=1)
        await self.broker.stop()
        await until(lambda: not client.connected, "the client to notice the broker is gone")
        pending = client.publish("p", b"1", qos=1)
        self.failureResultOf(client.publish("p", b"2", qos=2), QueueFull)
        waiting = client.when_connected()
        await settle(client.stopService())
        self.failureResultOf(pending, ClientStopped)
        self.failureResultOf(waiting, ClientStopped)
        self.failureResultOf(client.publish("p", b"3", qos=1), ClientStopped)
        self.assertIsNone(client._retry)
        self.assertIsNone(client._socket)
        self.assertFalse(client._misc.running)
        ours = [s for s in reactor.getReaders() + reactor.getWriters() if isinstance(s, _PahoSocket)]
        self.assertEqual(ours, [])

    async def test_persistent_session_keeps_messages_across_a_broker_restart(self) -> None:
        leader = self.client("leader", clean_session=False, start=False)
        inbox = Inbox()
        leader.subscribe("data/#", inbox, qos=1)
        leader.startService()
        await settle(leader.when_connected())
        await settle(leader.publish("data/ping", b"subscribed", qos=1))
        await inbox.wait_for("data/ping", b"subscribed")
        await settle(leader.stopService())
        worker = await self.connected_client("worker")
        await settle(worker.publish("data/od", b"0.42", qos=1))
        await settle(worker.stopService())
        await self.broker.stop()
        await self.broker.start()
        again = self.client("leader", clean_session=False, start=False)
        later = Inbox()
        again.subscribe("data/#", later, qos=1)
        again.startService()
        message = await later.wait_for("data/od", b"0.42")
        self.assertEqual(message.qos, 1)

    # What the leader's ingest needs: acknowledging later, and not reading while it catches up.

    async def test_an_unacknowledged_message_comes_again_on_the_next_connection_only(self) -> None:
        client = self.client("ingest", clean_session=False, manual_ack=True)
        inbox = Inbox()
        client.subscribe("m/#", inbox, qos=1)
        await self.ready(client)
        first_session = client.session
        await settle(client.publish("m/1", b"one", qos=1))
        message = await inbox.wait_for("m/1", b"one")
        self.assertEqual((message.session, message.qos), (first_session, 1))
        await client.stopService()  # not acknowledged
        client.startService()
        again = await until_second(inbox, "m/1")
        self.assertEqual(again.session, client.session)
        self.assertGreater(client.session, first_session)
        self.assertFalse(client.ack(message))  # from the earlier connection: the broker sent it again
        self.assertTrue(client.ack(again))
        await client.stopService()
        client.startService()
        await self.ready(client)
        await deferLater(reactor, 0.1)
        self.assertEqual(inbox.payloads("m/1"), [b"one", b"one"])  # acknowledged: not sent a third time

    async def test_paused_reading_holds_messages_until_resumed(self) -> None:
        client = self.client("reader")
        inbox = Inbox()
        client.subscribe("p/#", inbox, qos=1)
        await self.ready(client)
        client.pause_reading()
        publisher = await self.connected_client("writer")
        await settle(publisher.publish("p/1", b"x", qos=1))
        await deferLater(reactor, 0.1)
        self.assertEqual(inbox.payloads("p/1"), [])
        client.resume_reading()
        await inbox.wait_for("p/1", b"x")


async def until_second(inbox: Inbox, topic: str) -> Message:
    await until(lambda: len(inbox.payloads(topic)) >= 2, f"a second delivery on {topic}")
    return [m for m in inbox.messages if m.topic == topic][1]
