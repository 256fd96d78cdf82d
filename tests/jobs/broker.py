"""An in-memory broker for Clock-driven job tests: retained messages, wildcards, and last wills.

Delivery is synchronous, so a test sees a job's reaction as soon as it
publishes. Integration tests use a real mosquitto instead (``tests/mosquitto.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from paho.mqtt.client import topic_matches_sub
from twisted.internet.defer import Deferred, succeed

from pioreactor_appliance.mqtt import Will


@frozen
class Delivered:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@define(eq=False)
class Connection:
    broker: FakeBroker
    client_id: str
    will: Will | None
    subscriptions: dict[str, Callable[[Any], None]] = field(factory=dict)
    open: bool = True

    def publish(
        self,
        topic: str,
        payload: str | bytes | None,
        qos: int = 0,
        retain: bool = False,
    ) -> Deferred[None]:
        assert self.open, f"{self.client_id} published to {topic} after closing"
        data = (
            b""
            if payload is None
            else payload.encode("utf-8")
            if isinstance(payload, str)
            else payload
        )
        self.broker.deliver(topic, data, qos, retain)
        return succeed(None)

    def subscribe(
        self, topic_filter: str, callback: Callable[[Any], None], qos: int = 1
    ) -> None:
        self.subscriptions[topic_filter] = callback
        for topic, message in list(self.broker.retained.items()):
            if topic_matches_sub(topic_filter, topic):
                callback(message)

    def unsubscribe(self, topic_filter: str) -> None:
        self.subscriptions.pop(topic_filter, None)

    def close(self) -> None:
        """A clean DISCONNECT: no will."""
        self.open = False
        self.broker.connections.remove(self)

    def die(self) -> None:
        """The process or the network died: the broker publishes the will."""
        self.close()
        if self.will is not None:
            self.broker.deliver(
                self.will.topic, self.will.payload, self.will.qos, self.will.retain
            )


@define
class FakeBroker:
    retained: dict[str, Delivered] = field(factory=dict)
    log: list[Delivered] = field(factory=list)
    connections: list[Connection] = field(factory=list)

    def connect(
        self, client_id: str, will: Will | None = None
    ) -> tuple[Connection, Callable[[], None]]:
        """The ``Connector`` a JobManager takes."""
        connection = Connection(self, client_id, will)
        self.connections.append(connection)
        return connection, connection.close

    def client(self, client_id: str = "test") -> Connection:
        return self.connect(client_id)[0]

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        message = Delivered(topic, payload, qos, retain)
        self.log.append(message)
        if retain:
            if payload:
                self.retained[topic] = message
            else:
                self.retained.pop(topic, None)
        live = Delivered(
            topic, payload, qos, False
        )  # subscribers see a live message without the retain flag
        for connection in list(self.connections):
            for topic_filter, callback in list(connection.subscriptions.items()):
                if topic_matches_sub(topic_filter, topic):
                    callback(live)

    def value(self, topic: str) -> bytes | None:
        message = self.retained.get(topic)
        return None if message is None else message.payload

    def published(self, topic_filter: str) -> list[Delivered]:
        return [m for m in self.log if topic_matches_sub(topic_filter, m.topic)]
