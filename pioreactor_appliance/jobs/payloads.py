"""How job settings travel as MQTT payloads, both ways, as the reference's clients expect.

Out: numbers and strings as text, booleans as ``True``/``False``, ``None`` as an
empty payload (which clears a retained topic), dicts and lists as JSON. In: a
``/set`` payload is text, cast by the setting's datatype; a payload that does
not cast is refused with a reason, never half-applied.
"""

from __future__ import annotations

import json
import math
from typing import Any

DATATYPES = ("string", "float", "integer", "boolean", "json")
_TRUE = {"true", "1", "y", "on", "yes", "t"}
_FALSE = {"false", "0", "n", "off", "no", "f"}


class BadPayload(ValueError):
    """A /set payload that does not fit the setting's datatype."""


def encode(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, (int, float, str)):
        return str(value).encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes, datatype: str) -> Any:
    """The value a /set payload asks for; ``BadPayload`` saying why when it does not cast."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadPayload("the payload is not UTF-8 text") from None
    if datatype == "string":
        return text
    if datatype == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise BadPayload(
            f"{text[:40]!r} is not a boolean (true/false, 1/0, on/off, yes/no)"
        )
    if datatype == "integer":
        try:
            return int(text)
        except ValueError:
            raise BadPayload(f"{text[:40]!r} is not an integer") from None
    if datatype == "float":
        try:
            value = float(text)
        except ValueError:
            raise BadPayload(f"{text[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise BadPayload(f"{text[:40]!r} is not a finite number")
        return value
    if datatype == "json":
        try:
            return json.loads(text)
        except ValueError:
            raise BadPayload(f"{text[:40]!r} is not JSON") from None
    raise ValueError(f"unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
