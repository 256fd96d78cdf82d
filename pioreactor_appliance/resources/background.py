"""Side effects a route starts but does not wait for: fan-out calls and MQTT publishes.

A client's answer must not hang on a slow unit or broker, yet a failure must
not vanish either, so each of these ends in the log when it goes wrong.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class FanOutClient(Protocol):
    def request(self, method: str, units: list[str], path: str, json: Any = None) -> Deferred[dict[str, dict[str, Any]]]: ...


class Publisher(Protocol):
    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> Deferred[Any]: ...


def fan_out_logged(fanout: FanOutClient, method: str, units: list[str], path: str, json: Any = None) -> Deferred[dict[str, Any]]:
    """Call ``path`` on ``units``; every unit that fails is logged. The Deferred never fails."""

    def check(envelopes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for unit, envelope in envelopes.items():
            if not envelope.get("ok"):
                log.warn(
                    "{method} {path} on {unit} failed: {error}", method=method, path=path, unit=unit, error=envelope.get("error")
                )
        return envelopes

    def failed(failure: Failure) -> dict[str, Any]:
        if failure.check(CancelledError):
            log.info("{method} {path} to {units} was cancelled: the leader is stopping", method=method, path=path, units=units)
        else:
            log.failure("{method} {path} to {units} failed", failure, method=method, path=path, units=units)
        return {}

    if not units:
        return succeed({})
    return fanout.request(method, units, path, json=json).addCallbacks(check, failed)


def publish_logged(mqtt: Publisher, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> Deferred[bool]:
    """Publish; fires True once the broker has it, False (and logs) if it could not be published."""

    def failed(failure: Failure) -> bool:
        log.failure("Could not publish to {topic}", failure, topic=topic)
        return False

    return mqtt.publish(topic, payload, qos=qos, retain=retain).addCallbacks(lambda _: True, failed)


class BrokerAway(Exception):
    """The broker did not take a message in time, or refused it."""


def publish_within(mqtt: Publisher, clock: IReactorTime, topic: str, payload: str | bytes, qos: int, seconds: float) -> Deferred[None]:
    """Publish, waiting at most ``seconds`` for the broker; fails with BrokerAway, or ValueError for a bad topic."""
    waiter: Deferred[None] = Deferred()

    def landed(result: Any) -> None:
        if timer.active():
            timer.cancel()
            waiter.callback(None)

    def failed(failure: Failure) -> None:
        if timer.active():
            timer.cancel()
            waiter.errback(BrokerAway(failure.getErrorMessage() or failure.type.__name__))

    def too_slow() -> None:
        waiter.errback(BrokerAway(f"the broker did not take the message within {seconds:g} s"))

    d = mqtt.publish(topic, payload, qos=qos)  # ValueError here: a name that cannot be a topic
    timer = clock.callLater(seconds, too_slow)
    d.addCallbacks(landed, failed)
    return waiter
