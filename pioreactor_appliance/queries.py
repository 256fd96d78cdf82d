"""Strict, bounded query parameters: ``?lookback=4`` in, an attrs instance out.

A route names an attrs class; each field is one parameter of type ``int``,
``float``, ``bool`` or ``str``. Field metadata bounds it: ``minimum``, and
``limit``, the name of a ``[limits]`` key that caps it, so a request cannot
ask for a year of data at a million points unless the lab raised the cap.
Parameters the class does not name are ignored (browsers add cache busters),
but the whole query string is bounded by the request policy.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

import attrs
from twisted.web.iweb import IRequest

from .errors import ApiError
from .limits import Limits

T = TypeVar("T")

_INT = re.compile(r"-?[0-9]{1,18}")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def check_query_class(cls: type) -> None:
    """Refuse, when a route is declared, a field this module cannot parse."""
    for field in attrs.fields(attrs.resolve_types(cls)):
        if field.type not in _NAMES:
            raise TypeError(f"{cls.__name__}.{field.name}: a query parameter is int, float, bool or str, not {field.type!r}")


def limits_of(request: IRequest) -> Limits:
    """The limits of the site serving ``request``; the shipped ones on a bare test site."""
    limits = getattr(getattr(request, "site", None), "limits", None)
    return limits if isinstance(limits, Limits) else Limits.defaults()


def _bad(name: str, problem: str, remediation: str) -> ApiError:
    return ApiError(400, f"Bad query parameter {name}: {problem}.", remediation=remediation)


def _convert(name: str, kind: type, raw: str) -> Any:
    if kind is str:
        return raw
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
    elif kind is int and _INT.fullmatch(raw):
        return int(raw)
    elif kind is float:
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    raise _bad(name, f"{raw[:40]!r} is not {_NAMES[kind]}", f"Send {name} as {_NAMES[kind]}.")


def _check_bounds(name: str, value: Any, field: attrs.Attribute, limits: Limits) -> None:
    minimum = field.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise _bad(name, f"{value} is below {minimum}", f"Send {name} of at least {minimum}.")
    limit = field.metadata.get("limit")
    if limit is not None and value > getattr(limits, limit):
        cap = getattr(limits, limit)
        raise _bad(
            name,
            f"{value} is above this unit's limit of {cap}",
            f"Send {name} of at most {cap}, or raise [limits] {limit} in the config.",
        )


def read_query(request: IRequest, cls: type[T]) -> T:
    """Parse the query string into ``cls``, or raise a 400 naming the parameter."""
    limits = limits_of(request)
    args: dict[bytes, list[bytes]] = request.args or {}
    values: dict[str, Any] = {}
    for field in attrs.fields(attrs.resolve_types(cls)):
        raw_values = args.get(field.name.encode("ascii"))
        if not raw_values:
            if field.default is attrs.NOTHING:
                raise _bad(field.name, "it is missing", f"Add ?{field.name}=... to the URL.")
            continue
        if len(raw_values) > 1:
            raise _bad(field.name, "it is given more than once", f"Send {field.name} once.")
        try:
            raw = raw_values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(field.name, "it is not UTF-8", f"Percent-encode {field.name} as UTF-8.") from None
        kind = field.type
        value = _convert(field.name, kind, raw)
        if kind is not str and kind is not bool:
            _check_bounds(field.name, value, field, limits)
        values[field.name] = value
    return cls(**values)

