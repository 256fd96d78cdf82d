"""The unit's presence on MQTT: ``ready`` while the process runs, ``lost`` (the broker's will) if it dies.

The UI shows a unit as online from ``pioreactor/<unit>/$experiment/monitor/$state``.
Seeing our own ``lost`` while we run means the broker fired the will during a
network blip; subscriptions are renewed on every reconnect and the retained
``lost`` comes back then, so answering it with ``ready`` also restores the
state after each reconnect.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .mqtt import Message, MqttClient

STOP_PUBLISH_TIMEOUT = 2.0


def state_topic(unit: str) -> str:
    return f"pioreactor/{unit}/$experiment/monitor/$state"


class Presence(Service):
    log = Logger()

    def __init__(self, mqtt: MqttClient, unit: str, clock: IReactorTime) -> None:
        self._mqtt = mqtt
        self._clock = clock
        self._topic = state_topic(unit)

    def startService(self) -> None:
        super().startService()
        self._mqtt.subscribe(self._topic, self._on_state, qos=1)
        self._publish(b"ready")

    def _publish(self, state: bytes) -> Deferred[None]:
        d = self._mqtt.publish(self._topic, state, qos=2, retain=True)
        d.addErrback(lambda f: self.log.warn("Could not publish {state} to {topic}: {why}", state=state, topic=self._topic, why=f.getErrorMessage()))
        return d

    def _on_state(self, message: Message) -> None:
        if message.payload == b"lost" and self.running:
            self._publish(b"ready")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._mqtt.unsubscribe(self._topic)
        if not self._mqtt.connected:
            return None  # type: ignore[return-value]
        d = self._publish(b"disconnected")
        d.addTimeout(STOP_PUBLISH_TIMEOUT, self._clock)
        return d.addErrback(lambda _: None)
