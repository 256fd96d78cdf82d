"""Timestamps as the Pioreactor clients expect them: ISO 8601, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(seconds: float) -> str:
    return format_utc(datetime.fromtimestamp(seconds, tz=timezone.utc))


def format_utc(moment: datetime) -> str:
    """``moment`` (aware) in the one text form the database stores, so text order is time order."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time that must carry its timezone (a naive time is ambiguous across a cluster)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; add Z or an offset such as +00:00")
    return moment.astimezone(timezone.utc)
