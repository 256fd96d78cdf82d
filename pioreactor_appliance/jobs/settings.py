"""What a job publishes and what it takes to start: declared once per job class.

The declarations drive the MQTT contract (which settings are retained, which
take ``/set``), the run options a request may carry, and ``/unit_api/capabilities``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from .payloads import BadPayload, decode

SCALARS = ("string", "float", "integer", "boolean", "json")


@frozen
class Setting:
    """A published setting: ``datatype`` is a scalar type or the name of a JSON struct (``MeasuredRPM``)."""

    datatype: str
    settable: bool = False
    unit: str | None = None
    persist: bool = False  # kept (not cleared) when the job stops cleanly

    @property
    def wire_type(self) -> str:
        """How a /set payload for it is cast: structs travel as JSON."""
        return self.datatype if self.datatype in SCALARS else "json"

    def as_json(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "datatype": self.datatype,
            "settable": self.settable,
        }
        if self.unit is not None:
            described["unit"] = self.unit
        return described


@frozen
class Option:
    """A run option, as the reference's ``pio run <job> --<name> <value>`` takes it."""

    datatype: str
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    flag: bool = False  # a CLI flag: given with no value (JSON null), it means true


class BadOptions(ValueError):
    """Run options that do not fit the job; the message names the option and what it takes."""


def _cast(name: str, option: Option, value: Any) -> Any:
    """A JSON value of the right type, or text that casts to it as a CLI flag would."""
    kind = option.datatype
    if isinstance(value, str) and kind != "string":
        try:
            value = decode(value.encode("utf-8"), kind)
        except BadPayload as e:
            raise BadOptions(f"option {name}: {e}") from None
    elif isinstance(value, bool):
        if kind not in ("boolean", "json"):
            raise BadOptions(f"option {name}: expected {kind}, got a boolean")
    elif kind == "float" and isinstance(value, (int, float)):
        value = float(value)
        if not math.isfinite(value):
            raise BadOptions(f"option {name}: must be a finite number")
    elif kind == "string" and isinstance(value, (int, float)):
        value = str(value)  # as a CLI flag would take it: --ir-led-intensity 80
    elif not (kind == "json" or (kind == "integer" and isinstance(value, int)) or (kind == "string" and isinstance(value, str))):
        raise BadOptions(f"option {name}: expected {kind}, got {type(value).__name__} {str(value)[:40]!r}")
    if option.minimum is not None and value < option.minimum:
        raise BadOptions(
            f"option {name}: {value} is below the minimum {option.minimum:g}"
        )
    if option.maximum is not None and value > option.maximum:
        raise BadOptions(
            f"option {name}: {value} is above the maximum {option.maximum:g}"
        )
    if option.choices and value not in option.choices:
        raise BadOptions(
            f"option {name}: {value!r} is not one of {', '.join(option.choices)}"
        )
    return value


def parse_options(
    declared: Mapping[str, Option], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Every declared option's value: given (cast), else its default. Unknown names are refused.

    Names may use dashes, as CLI flags do. ``None`` (or an empty string, as the
    reference's UI sends for an untouched field) means "use the default".
    """
    values = {name: option.default for name, option in declared.items()}
    for raw_name, value in given.items():
        name = raw_name.replace("-", "_")
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise BadOptions(f"unknown option {raw_name!r}; this job takes: {known}")
        if value is None and declared[name].flag:
            values[name] = True
            continue
        if value is None or value == "":
            continue
        values[name] = _cast(name, declared[name], value)
    return values
