"""MQTT client: paho-mqtt driven by the Twisted reactor, with Deferreds, resubscription and reconnect.

paho never gets a network thread of its own. The reactor watches paho's socket
(``on_socket_open``/``_close``/``_register_write``/``_unregister_write`` tell us
when) and calls ``loop_read``/``loop_write``; a ``LoopingCall`` runs
``loop_misc`` for keep-alives. Only the blocking DNS lookup + TCP connect
(``Client.reconnect``) runs in the reactor's thread pool. Everything else,
including every callback and Deferred, happens on the reactor thread.

paho holds a non-reentrant lock while it runs its callbacks, so code that
re-enters paho from one (say, dropping the connection when a Deferred fires)
would deadlock the reactor. Our paho callbacks therefore only queue what is to
be done for the user, and ``_drive`` runs the queue once paho has returned.

paho only reconnects inside ``loop_forever``/``loop_start``, so reconnecting
with exponential backoff is ours. TLS is not supported (paho would buffer
decrypted bytes the reactor cannot see).
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from attrs import frozen
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

STOP_TIMEOUT = 2.0  # seconds stopService waits for the DISCONNECT to go out before dropping the socket
MISC_INTERVAL = 1.0  # seconds between loop_misc calls (keep-alive pings and their timeouts)
MAX_QUEUED_MESSAGES = 10_000  # default bound on QoS 1/2 messages waiting for the broker
MAX_ROUTES = 4096  # topics whose matching subscriptions are remembered


class MqttError(Exception):
    """An MQTT operation could not be done."""


class NotConnected(MqttError):
    """A QoS 0 message was published (or lost) while there was no connection to the broker."""


class QueueFull(MqttError):
    """paho's outgoing queue is full, usually because the broker has been away for long."""


class ClientStopped(MqttError):
    """The client stopped before the operation finished."""


@frozen
class Will:
    """What the broker publishes for us if our connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 2
    retain: bool = True


@frozen
class Message:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    session: int = 0  # which connection it came on: an ack is only valid on that one


def parse_hostport(text: str, default_port: int = 1883) -> tuple[str, int]:
    """Parse ``host``, ``host:port``, ``[v6addr]`` or ``[v6addr]:port``; the ``--mqtt`` option uses it."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"bad address {text!r}: put an IPv6 address in brackets, as in [::1]:1883")
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    if not host or host != host.strip():
        raise ValueError(f"bad address {text!r}: the host is empty or has spaces")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {text!r}: expected a number from 1 to 65535")
    return host, int(port_text)


def _forbidden_in_topic(c: str) -> bool:
    """What MQTT 3.1.1 (1.5.3) forbids or says not to send, and mosquitto refuses."""
    code = ord(c)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFE) == 0xFFFE
    )


def _check_topic(topic: str, *, is_filter: bool) -> None:
    """Reject topics the broker would refuse, now rather than at the next reconnect."""
    if not topic:
        raise ValueError("empty MQTT topic")
    if any(_forbidden_in_topic(c) for c in topic):
        raise ValueError(f"MQTT topic {topic[:80]!r} has control or non-character code points; the broker would drop the connection")
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        raise ValueError("MQTT topic longer than 65535 bytes")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level or "+" in level:
            if not is_filter:
                raise ValueError(f"wildcards are not allowed in a topic to publish to: {topic!r}")
            if level not in ("#", "+") or (level == "#" and i != len(levels) - 1):
                raise ValueError(f"bad MQTT topic filter {topic!r}")


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"MQTT QoS must be 0, 1 or 2, not {qos!r}")


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """Lets the reactor watch one of paho's sockets; paho itself reads, writes and closes it."""

    def __init__(self, owner: MqttClient, client: paho.Client, sock: Any) -> None:
        self._owner = owner
        self._client = client
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "mqtt"

    def doRead(self) -> None:
        self._owner._drive(self._client.loop_read)  # errors close the socket, and on_socket_close tells us

    def doWrite(self) -> None:
        self._owner._drive(self._client.loop_write)

    def connectionLost(self, reason: Failure) -> None:
        # The reactor dropped the fd (hang-up or an exception); make paho close it too.
        self._owner._abort_connection()


class MqttClient(Service):
    """One broker connection for the whole process, kept up until ``stopService``."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        client_id: str,
        *,
        will: Will | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_queued: int = MAX_QUEUED_MESSAGES,
        manual_ack: bool = False,
    ) -> None:
        self._reactor = reactor
        self.host = host
        self.port = port
        self.client_id = client_id
        self._will = will
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self._clean_session = clean_session
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_queued = max_queued
        self._manual_ack = manual_ack
        self._session = 0  # counts accepted connections; see Message.session
        self._reading_paused = False
        self._routes: dict[str, list[tuple[str, Callable[[Message], None]]]] = {}  # topic -> matching subscriptions
        self._backoff = min_backoff
        self._connected = False
        self._subscriptions: dict[str, tuple[int, Callable[[Message], None]]] = {}
        self._pending: dict[int, tuple[int, Deferred[None]]] = {}  # mid -> (qos, publish Deferred)
        # QoS 1/2 messages published while not connected, sent after the next CONNACK.
        self._held: list[tuple[str, str | bytes | None, int, bool, Deferred[None]]] = []
        self._connect_waiters: list[Deferred[None]] = []
        self._close_waiters: list[Deferred[None]] = []
        self._after_paho: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._attempt: Deferred[None] | None = None  # the connect running in a thread
        self._retry: Any = None  # IDelayedCall of the next connect attempt
        self._socket: _PahoSocket | None = None
        self._misc = LoopingCall(self._loop_misc)
        self._misc.clock = reactor
        self._client = self._new_client()

    @property
    def connected(self) -> bool:
        """True between the broker's CONNACK and the loss of the connection."""
        return self._connected

    @property
    def session(self) -> int:
        """The number of the current (or last) connection; messages carry the one they came on."""
        return self._session

    def publish(self, topic: str, payload: str | bytes | None, qos: int = 0, retain: bool = False) -> Deferred[None]:
        """Publish; fires on PUBACK (QoS 1) / PUBCOMP (QoS 2), or once written for QoS 0.

        While not connected, QoS 1/2 messages wait (at most ``max_queued``, else
        ``QueueFull``) and go out after the next CONNACK, after the resubscription;
        QoS 0 ones fail at once with ``NotConnected``. A bad topic or QoS raises ValueError.
        """
        _check_topic(topic, is_filter=False)
        _check_qos(qos)
        if not self.running:
            return fail(ClientStopped(f"the MQTT client is not running; not publishing to {topic}"))
        if qos == 0 and not self._connected:
            return fail(NotConnected(f"not connected to the MQTT broker {self.host}:{self.port}; QoS 0 message to {topic} dropped"))
        d: Deferred[None] = Deferred()
        if self._connected:
            self._publish_now(topic, payload, qos, retain, d)
        elif len(self._held) >= self._max_queued:
            d.errback(QueueFull(f"{len(self._held)} MQTT messages already wait for the broker; message to {topic} dropped"))
        else:
            # Held by us, not paho: paho must not be touched while it connects on a thread.
            self._held.append((topic, payload, qos, retain, d))
        return d

    def subscribe(self, topic_filter: str, callback: Callable[[Message], None], qos: int = 1) -> None:
        """Call ``callback`` for each message matching the filter, from now and after every reconnect.

        One callback per filter: subscribing to the same filter again replaces it.
        """
        _check_topic(topic_filter, is_filter=True)
        _check_qos(qos)
        self._subscriptions[topic_filter] = (qos, callback)
        self._routes.clear()
        if self._connected:
            self._client.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self._routes.clear()
        if self._subscriptions.pop(topic_filter, None) is not None and self._connected:
            self._client.unsubscribe(topic_filter)

    def ack(self, message: Message) -> bool:
        """With ``manual_ack``: acknowledge a QoS 1/2 message once it is safe (say, committed).

        Until then the broker keeps it, and delivers it again on the next
        connection of a persistent session. Returns False when the message came on
        an earlier connection: the broker resends it, so it must not be acked here.
        """
        if message.qos == 0:
            return True
        if not self._connected or message.session != self._session:
            return False
        self._client.ack(message.mid, message.qos)
        return True

    def pause_reading(self) -> None:
        """Stop reading from the broker (backpressure: TCP makes it wait); writes go on."""
        self._reading_paused = True
        if self._socket is not None:
            self._reactor.removeReader(self._socket)

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._socket is not None:
                self._reactor.addReader(self._socket)

    def when_connected(self) -> Deferred[None]:
        """Fire now if connected, else on the next CONNACK (fails with ClientStopped on stop)."""
        if self._connected:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._connect_waiters.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._backoff = self._min_backoff
        self._connect()

    def stopService(self) -> Deferred[None]:
        """Send DISCONNECT (so no will), wait for the socket to close, fail what is still pending."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._attempt is not None:
            await self._attempt  # a thread cannot be interrupted; paho's connect_timeout (5 s) bounds the TCP part
        if self._client.socket() is not None:
            closed: Deferred[None] = Deferred()
            self._close_waiters.append(closed)
            self._client.disconnect()
            try:
                await closed.addTimeout(STOP_TIMEOUT, self._reactor)
            except defer.TimeoutError:
                self.log.warn("MQTT DISCONNECT not sent within {timeout}s; dropping the connection", timeout=STOP_TIMEOUT)
                self._abort_connection()
        pending, self._pending = self._pending, {}
        held, self._held = self._held, []
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in [d for _, d in pending.values()] + [h[-1] for h in held]:
            _errback(d, ClientStopped("the MQTT client stopped before the broker acknowledged the message"))
        for d in waiters:
            _errback(d, ClientStopped("the MQTT client stopped before it connected"))
        self._client = self._new_client()  # a later start must not resend what we just failed
        self.log.info("MQTT client {client_id} stopped", client_id=self.client_id)

    def _new_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self._clean_session,
            protocol=paho.MQTTv311,
            manual_ack=self._manual_ack,
            reconnect_on_failure=False,  # reconnecting is ours; paho would do it blocking, on our thread
        )
        if self._will is not None:
            client.will_set(self._will.topic, self._will.payload, self._will.qos, self._will.retain)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        client.max_queued_messages_set(self._max_queued)
        client.connect_async(self.host, self.port, self._keepalive)  # only records where; reconnect() connects
        client.on_socket_open = self._on_reactor_thread(self._socket_opened)
        client.on_socket_close = self._on_reactor_thread(self._socket_closed)
        client.on_socket_register_write = self._on_reactor_thread(self._register_write)
        client.on_socket_unregister_write = self._on_reactor_thread(self._unregister_write)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_reactor_thread(self, f: Callable[[Any], None]) -> Callable[[paho.Client, Any, Any], None]:
        """Socket callbacks also come from the connect thread; move those to the reactor thread."""

        def callback(client: paho.Client, userdata: Any, sock: Any) -> None:
            if isInIOThread():
                f(sock)
            else:
                self._reactor.callFromThread(self._drive, f, sock)

        return callback

    # Connecting and reconnecting.

    def _connect(self) -> None:
        self._retry = None
        self.log.debug("MQTT connecting to {host}:{port} as {client_id}", host=self.host, port=self.port, client_id=self.client_id)
        client = self._client
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), client.reconnect)
        d.addBoth(self._connect_returned)  # on success CONNECT is queued; CONNACK comes in on_connect
        d.addErrback(self._connect_failed)
        self._attempt = d

    def _connect_returned(self, result: object) -> object:
        self._attempt = None
        return result

    def _connect_failed(self, failure: Failure) -> None:
        self._abort_connection()  # in case the socket opened before the failure
        if self.running and self._retry is None:
            delay = self._schedule_connect()
            self.log.warn(
                "MQTT connect to {host}:{port} failed ({why}); retrying in {delay:.1f}s",
                host=self.host, port=self.port, why=failure.getErrorMessage(), delay=delay,
            )

    def _release_held(self) -> None:
        """After paho resent what was in flight when the connection dropped, so the order holds."""
        held, self._held = self._held, []
        for topic, payload, qos, retain, d in held:
            self._publish_now(topic, payload, qos, retain, d)

    def _schedule_connect(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)
        self._retry = self._reactor.callLater(delay, self._connect)
        return delay

    def _abort_connection(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes our will."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        while client.socket() is sock:  # paho reads what is left, then EOF, and closes
            self._drive(client.loop_read)

    def _drive(self, f: Callable[..., object], *args: Any) -> None:
        """Call into paho, then do what its callbacks queued for the user (see the module docstring)."""
        try:
            f(*args)
        finally:
            while self._after_paho:
                g, g_args = self._after_paho.popleft()
                g(*g_args)

    def _later(self, f: Callable[..., object], *args: Any) -> None:
        """From a paho callback: run f once paho has returned to ``_drive``."""
        self._after_paho.append((f, args))

    # paho's socket callbacks (reactor thread).

    def _socket_opened(self, sock: Any) -> None:
        self._socket = _PahoSocket(self, self._client, sock)
        if not self._reading_paused:
            self._reactor.addReader(self._socket)
        self._misc.start(MISC_INTERVAL, now=False).addErrback(lambda f: self.log.failure("MQTT keep-alive loop failed", f))

    def _register_write(self, sock: Any) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self._reactor.addWriter(self._socket)

    def _unregister_write(self, sock: Any) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self._reactor.removeWriter(self._socket)

    def _socket_closed(self, sock: Any) -> None:
        if self._socket is None or self._socket.sock is not sock:
            return
        self._reactor.removeReader(self._socket)
        self._reactor.removeWriter(self._socket)
        self._socket = None
        if self._misc.running:
            self._misc.stop()
        was_connected, self._connected = self._connected, False
        for mid, (qos, d) in list(self._pending.items()):
            if qos == 0:  # paho drops unwritten QoS 0 packets on reconnect, without on_publish
                del self._pending[mid]
                self._later(_errback, d, NotConnected("the MQTT connection was lost before the QoS 0 message was sent"))
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            self._later(_callback, d)
        if self.running and self._retry is None and self._attempt is None:
            delay = self._schedule_connect()
            what = "connection lost" if was_connected else "connection closed before it was accepted"
            self.log.warn(
                "MQTT {what} ({host}:{port}); reconnecting in {delay:.1f}s",
                what=what, host=self.host, port=self.port, delay=delay,
            )

    def _loop_misc(self) -> None:
        self._drive(self._client.loop_misc)

    # paho's MQTT callbacks (reactor thread, from loop_read/loop_write/loop_misc).

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not self.running:  # a CONNACK racing our DISCONNECT; _stop fails what waits
            return
        if reason.is_failure:
            self.log.warn("MQTT broker {host}:{port} refused the connection: {reason}", host=self.host, port=self.port, reason=str(reason))
            return
        self._connected = True
        self._session += 1
        self._backoff = self._min_backoff
        self.log.info(
            "MQTT connected to {host}:{port} as {client_id} (session present: {present})",
            host=self.host, port=self.port, client_id=self.client_id, present=flags.session_present,
        )
        if self._subscriptions:
            client.subscribe([(f, qos) for f, (qos, _) in self._subscriptions.items()])
        self._later(self._release_held)  # runs after _handle_connack has resent paho's queue
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in waiters:
            self._later(_callback, d)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            self.log.error("MQTT broker refused a subscription: {reasons}", reasons=[str(r) for r in reasons])

    def _publish_now(self, topic: str, payload: str | bytes | None, qos: int, retain: bool, d: Deferred[None]) -> None:
        try:
            info = self._client.publish(topic, payload, qos, retain)
        except (ValueError, TypeError) as e:
            d.errback(e)
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            d.errback(QueueFull(f"paho's queue is full ({self._max_queued} messages); message to {topic} dropped"))
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
            d.errback(MqttError(f"publish to {topic} failed: {paho.error_string(info.rc)}"))  # (QoS 1/2 stay queued)
        else:
            # paho writes later (register_write is set), so on_publish cannot come before this.
            self._pending[info.mid] = (qos, d)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        entry = self._pending.pop(mid, None)
        if entry is not None:
            self._later(_callback, entry[1])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.log.warn("MQTT message ignored: its topic is not UTF-8")
            return
        message = Message(topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, self._session)
        self._later(self._dispatch, message)

    def _matching(self, topic: str) -> list[tuple[str, Callable[[Message], None]]]:
        """The subscriptions a topic matches, remembered: matching every filter costs µs per filter."""
        routes = self._routes.get(topic)
        if routes is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            routes = self._routes[topic] = [
                (topic_filter, callback)
                for topic_filter, (_, callback) in self._subscriptions.items()
                if paho.topic_matches_sub(topic_filter, topic)
            ]
        return routes

    def _dispatch(self, message: Message) -> None:
        topic = message.topic
        for topic_filter, callback in self._matching(topic):
            try:
                callback(message)
            except Exception:
                self.log.failure("MQTT callback for {filter} failed on {topic}", filter=topic_filter, topic=topic)


def _callback(d: Deferred[None]) -> None:
    if not d.called:  # the caller may have cancelled it, e.g. with addTimeout
        d.callback(None)


def _errback(d: Deferred[None], error: Exception) -> None:
    if not d.called:
        d.errback(error)
