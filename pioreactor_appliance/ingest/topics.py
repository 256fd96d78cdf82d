"""Which MQTT topics the leader stores, and how each message becomes one row.

Topics are ``pioreactor/<unit>/<experiment>/<rest>``; the unit and the
experiment come from the topic (the automation settings records carry their
own, as in the reference). Every value is checked here, before it reaches
SQLite, so that one bad message can never fail the statement that inserts its
neighbours: a message that does not fit raises :class:`Malformed` saying why.
Timestamps are stored in one form (``…T12:00:00.123Z``) so text order is time
order; a timestamp without a timezone is refused (a log line without one is
counted apart, as the reference drops those).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..hardware.hat import PWM_PINS
from ..timestamps import format_utc, parse_iso

AUTOMATION_KINDS = ("dosing", "led", "temperature")
OD_CHANNELS = ("1", "2", "3", "4")
LED_CHANNELS = ("A", "B", "C", "D")
CHANNEL_OF_GPIO = {str(gpio): channel for channel, gpio in PWM_PINS.items()}


class Malformed(ValueError):
    """A message on a stored topic that cannot become a row; the text says what is wrong."""


class NoTimezone(Malformed):
    """A log line whose timestamp has no timezone (dropped and counted, as in the reference)."""


@frozen
class Row:
    """One row for ``table``, in the column order of :data:`COLUMNS`."""

    table: str
    values: tuple[Any, ...]


# The tables the ingest writes and their columns: the only identifiers its SQL is built from.
COLUMNS: dict[str, tuple[str, ...]] = {
    "od_readings": ("experiment", "pioreactor_unit", "timestamp", "od_reading", "angle", "channel"),
    "raw_od_readings": ("experiment", "pioreactor_unit", "timestamp", "od_reading", "channel"),
    "od_readings_fused": ("experiment", "pioreactor_unit", "timestamp", "od_reading"),
    "od_readings_filtered": ("experiment", "pioreactor_unit", "timestamp", "normalized_od_reading"),
    "growth_rates": ("experiment", "pioreactor_unit", "timestamp", "rate"),
    "temperature_readings": ("experiment", "pioreactor_unit", "timestamp", "temperature_c"),
    "stirring_rates": ("experiment", "pioreactor_unit", "timestamp", "measured_rpm"),
    "ir_led_intensities": ("experiment", "pioreactor_unit", "timestamp", "relative_intensity"),
    "alt_media_fractions": ("experiment", "pioreactor_unit", "timestamp", "alt_media_fraction"),
    "liquid_volumes": ("experiment", "pioreactor_unit", "timestamp", "liquid_volume"),
    "pwm_dcs": (
        "experiment", "pioreactor_unit", "timestamp",
        "channel_1", "channel_2", "channel_3", "channel_4", "channel_5",
    ),
    "dosing_events": ("experiment", "pioreactor_unit", "timestamp", "event", "volume_change_ml", "source_of_event"),
    "led_change_events": ("experiment", "pioreactor_unit", "timestamp", "channel", "intensity", "source_of_event"),
    "logs": ("experiment", "pioreactor_unit", "timestamp", "message", "source", "level", "task"),
    **{
        f"{kind}_automation_events": ("experiment", "pioreactor_unit", "timestamp", "event_name", "message", "data")
        for kind in AUTOMATION_KINDS
    },
    **{
        f"{kind}_automation_settings": (
            "experiment", "pioreactor_unit", "started_at", "ended_at", "automation_name", "settings",
        )
        for kind in AUTOMATION_KINDS
    },
}


# --- values ------------------------------------------------------------------


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Malformed(f"the payload is not JSON: {payload[:60]!r}") from None


def _object(payload: bytes) -> dict[str, Any]:
    value = _json(payload)
    if not isinstance(value, dict):
        raise Malformed(f"the payload is JSON but not an object: {payload[:60]!r}")
    return value


def _field(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise Malformed(f"the payload has no {key!r}")
    return obj[key]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"{what} must be a finite number, not {str(value)[:40]!r}")
    return float(value)


def _text_number(payload: bytes) -> float:
    """A setting published as text (bioreactor values)."""
    try:
        value = float(payload.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise Malformed(f"the payload is not a number: {payload[:40]!r}") from None
    return _number(value, "the payload")


def _string(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{what} must be a string, not {str(value)[:40]!r}")
    return value


def _timestamp(value: Any, what: str = "timestamp") -> str:
    text = _string(value, what)
    assert text is not None
    try:
        return format_utc(parse_iso(text))
    except ValueError as e:
        if "no timezone" in str(e):
            raise NoTimezone(f"{what} {text[:40]!r} has no timezone") from None
        raise Malformed(f"{what} {text[:40]!r} is not an ISO 8601 time") from None
    except OverflowError:
        raise Malformed(f"{what} {text[:40]!r} is out of range") from None


def _integer(value: Any, what: str, allowed: tuple[str, ...] | None = None) -> int:
    """Channels and angles come as text ("2", "90") or as numbers."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or (allowed is not None and text not in allowed):
        raise Malformed(f"{what} {str(value)[:20]!r} is not {'one of ' + ', '.join(allowed) if allowed else 'an integer'}")
    return int(text)


# --- one parser per stored topic ------------------------------------------------

# A parser gets (experiment, unit, payload, received_at, the topic's last level) and returns the row's values.
Parser = Callable[[str, str, bytes, str, str], tuple[Any, ...]]


def _od(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    return (
        e, u, _timestamp(_field(p, "timestamp")), _number(_field(p, "od"), "od"),
        _integer(_field(p, "angle"), "angle"), _integer(_field(p, "channel"), "channel", OD_CHANNELS),
    )


def _raw_od(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    return (
        e, u, _timestamp(_field(p, "timestamp")), _number(_field(p, "od"), "od"),
        _integer(_field(p, "channel"), "channel", OD_CHANNELS),
    )


def _keyed(key: str) -> Parser:
    """Payloads like ``{"<key>": number, "timestamp": …}``."""

    def parse(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
        p = _object(payload)
        return (e, u, _timestamp(_field(p, "timestamp")), _number(_field(p, key), key))

    return parse


def _received_number(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    return (e, u, now, _text_number(payload))


def _pwm_dcs(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    """``{"<gpio>": dc}`` for the pins that are on; the others are at 0."""
    p = _object(payload)
    duty = dict.fromkeys(PWM_PINS, 0.0)
    for gpio, dc in p.items():
        if gpio not in CHANNEL_OF_GPIO:
            raise Malformed(f"GPIO {gpio[:10]!r} is not a PWM pin ({', '.join(CHANNEL_OF_GPIO)})")
        duty[CHANNEL_OF_GPIO[gpio]] = _number(dc, f"the duty cycle of GPIO {gpio}")
    return (e, u, now, *(duty[c] for c in sorted(duty)))


def _dosing_event(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    return (
        e, u, _timestamp(_field(p, "timestamp")), _string(_field(p, "event"), "event"),
        _number(_field(p, "volume_change"), "volume_change"),
        _string(p.get("source_of_event"), "source_of_event", optional=True),
    )


def _led_change_event(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    channel = _field(p, "channel")
    if channel not in LED_CHANNELS:
        raise Malformed(f"channel {str(channel)[:10]!r} is not one of A, B, C, D")
    return (
        e, u, _timestamp(_field(p, "timestamp")), channel, _number(_field(p, "intensity"), "intensity"),
        _string(p.get("source_of_event"), "source_of_event", optional=True),
    )


def _log(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    return (
        e, u, _timestamp(_field(p, "timestamp")), _string(_field(p, "message"), "message"),
        _string(p.get("source", "app"), "source"), (_string(p.get("level", level), "level") or "").upper(),
        _string(p.get("task"), "task", optional=True),
    )


def _automation_event(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    data = p.get("data")
    return (
        e, u, now, _string(_field(p, "event_name"), "event_name"),
        _string(p.get("message"), "message", optional=True),
        "" if data is None else json.dumps(data, separators=(",", ":")),
    )


def _automation_settings(e: str, u: str, payload: bytes, now: str, level: str) -> tuple[Any, ...]:
    p = _object(payload)
    ended_at = p.get("ended_at")
    return (
        _string(_field(p, "experiment"), "experiment"), _string(_field(p, "pioreactor_unit"), "pioreactor_unit"),
        _timestamp(_field(p, "started_at"), "started_at"),
        None if ended_at is None else _timestamp(ended_at, "ended_at"),
        _string(_field(p, "automation_name"), "automation_name"), _string(_field(p, "settings"), "settings"),
    )


# <rest of the topic after pioreactor/<unit>/<experiment>/> -> (table, parser). Logs are matched apart.
ROUTES: dict[str, tuple[str, Parser]] = {
    **{f"od_reading/od{c}": ("od_readings", _od) for c in OD_CHANNELS},
    **{f"od_reading/raw_od{c}": ("raw_od_readings", _raw_od) for c in OD_CHANNELS},
    "od_reading/od_fused": ("od_readings_fused", _keyed("od_fused")),
    "od_reading/relative_intensity_of_ir_led": ("ir_led_intensities", _keyed("relative_intensity_of_ir_led")),
    "growth_rate_calculating/od_filtered": ("od_readings_filtered", _keyed("od_filtered")),
    "growth_rate_calculating/growth_rate": ("growth_rates", _keyed("growth_rate")),
    "temperature_automation/temperature": ("temperature_readings", _keyed("temperature")),
    "stirring/measured_rpm": ("stirring_rates", _keyed("measured_rpm")),
    "bioreactor/alt_media_fraction": ("alt_media_fractions", _received_number),
    "bioreactor/current_volume_ml": ("liquid_volumes", _received_number),
    "pwms/dc": ("pwm_dcs", _pwm_dcs),
    "dosing_events": ("dosing_events", _dosing_event),
    "led_change_events": ("led_change_events", _led_change_event),
    **{f"{k}_automation/latest_event": (f"{k}_automation_events", _automation_event) for k in AUTOMATION_KINDS},
    **{
        f"{k}_automation/{k}_automation_settings": (f"{k}_automation_settings", _automation_settings)
        for k in AUTOMATION_KINDS
    },
}
LOGS = ("logs", _log)

# What the ingest subscribes to: each stored topic, and the log tree.
TOPIC_FILTERS = (*(f"pioreactor/+/+/{rest}" for rest in ROUTES), "pioreactor/+/+/logs/#")


def row_of(topic: str, payload: bytes, received_at: str) -> Row | None:
    """The row a message becomes; None for one the reference does not store (test runs, cleared values).

    Raises :class:`Malformed` (or :class:`NoTimezone`) saying why a message cannot be stored.
    """
    levels = topic.split("/", 3)
    if len(levels) != 4 or levels[0] != "pioreactor" or not levels[1] or not levels[2]:
        raise Malformed(f"the topic {topic[:80]!r} is not pioreactor/<unit>/<experiment>/…")
    _, unit, experiment, rest = levels
    if "/_testing_" in topic or not payload:
        return None
    if rest.startswith("logs/"):
        table, parser = LOGS
    elif rest in ROUTES:
        table, parser = ROUTES[rest]
    else:
        raise Malformed(f"the topic {topic[:80]!r} is not one the leader stores")
    return Row(table, parser(experiment, unit, payload, received_at, rest.rsplit("/", 1)[-1]))
