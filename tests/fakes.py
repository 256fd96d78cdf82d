"""Small honest stand-ins for the fan-out client and the MQTT client: they record every call."""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed


@define
class FakeFanOut:
    """Answers every unit with ``{"ok": true}`` unless the unit is in ``down``."""

    calls: list[tuple[str, list[str], str, Any]] = field(factory=list)
    down: set[str] = field(factory=set)
    timeouts: list[float | None] = field(factory=list)

    def request(
        self, method: str, units: list[str], path: str, json: Any = None, *, timeout: float | None = None
    ) -> Deferred[dict[str, dict[str, Any]]]:
        self.calls.append((method, list(units), path, json))
        self.timeouts.append(timeout)
        return succeed({unit: self._envelope(unit) for unit in units})

    def post_bytes(
        self, units: list[str], path: str, body: bytes, content_type: bytes, *, timeout: float
    ) -> Deferred[dict[str, dict[str, Any]]]:
        """As ``request``; the call records the raw body and its content type."""
        self.calls.append(("POST", list(units), path, (content_type, body)))
        self.timeouts.append(timeout)
        return succeed({unit: self._envelope(unit) for unit in units})

    def _envelope(self, unit: str) -> dict[str, Any]:
        if unit in self.down:
            error = {"kind": "connection_error", "message": f"Could not reach {unit}."}
            return {"ok": False, "unit": unit, "error": error, "status_code": None, "retryable": True}
        return {"ok": True, "unit": unit, "value": {}}


class BrokerDown(Exception):
    pass


@define
class FakeMqtt:
    """Records publishes; fails them all while ``broken`` is set."""

    published: list[tuple[str, str | bytes, int, bool]] = field(factory=list)
    broken: bool = False

    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> Deferred[None]:
        if self.broken:
            return fail(BrokerDown("not connected"))
        self.published.append((topic, payload, qos, retain))
        return succeed(None)
