"""The naming rules for experiments and units, as attrs validators (a violation becomes a 400 naming the rule)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

BROADCAST = "$broadcast"

EXPERIMENT_FORBIDDEN_CHARACTERS = "#$%+/\\"
EXPERIMENT_MAX_LENGTH = 200
UNIT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,63}")
# For the API document: the part of the unit name rules a JSON Schema can say.
UNIT_NAME_SCHEMA = {"json_schema": {"pattern": f"^{UNIT_PATTERN.pattern}$"}}


def experiment_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an experiment's name, or None if it can."""
    if not name.strip():
        return "an experiment name must not be empty"
    if len(name) >= EXPERIMENT_MAX_LENGTH:
        return f"an experiment name must be under {EXPERIMENT_MAX_LENGTH} characters"
    if name.lower() == "current":
        return "'current' is reserved (it means the latest experiment)"
    if name.startswith("_testing"):
        return "names starting with '_testing' are reserved for test runs"
    found = sorted({c for c in name if c in EXPERIMENT_FORBIDDEN_CHARACTERS})
    if found:
        return f"an experiment name must not contain {' '.join(found)} (none of {' '.join(EXPERIMENT_FORBIDDEN_CHARACTERS)})"
    return None


def unit_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a unit's hostname, or None if it can."""
    if name == BROADCAST:
        return "$broadcast means every unit and cannot name one"
    if name.lower() == "localhost":
        return "localhost is not a unit's name; use its hostname"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"{name} is an IP address; use the unit's hostname"
    if not UNIT_PATTERN.fullmatch(name):
        return "a unit name is 1 to 63 letters, digits, '-' or '_'"
    return None


def valid_experiment_name(instance: Any, attribute: Any, value: str) -> None:
    problem = experiment_name_problem(value)
    if problem:
        raise ValueError(f"{attribute.name}: {problem}")


def valid_unit_name(instance: Any, attribute: Any, value: str) -> None:
    problem = unit_name_problem(value)
    if problem:
        raise ValueError(f"{attribute.name}: {problem}")
