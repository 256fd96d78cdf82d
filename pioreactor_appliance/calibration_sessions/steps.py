"""Steps as a client sees them, and the inputs a form step reads, checked as the reference checks them."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from attrs import field, frozen

if TYPE_CHECKING:
    from .protocol import Bench
    from .session import Session

StepType = Literal["info", "confirm", "form", "action", "result"]
FieldType = Literal["string", "float", "int", "bool", "float_list", "choice"]
TRUE_WORDS = ("true", "yes", "y", "1")
FALSE_WORDS = ("false", "no", "n", "0")


class InputError(ValueError):
    """Input a step cannot take; the message is the reference's 400 text."""


@frozen
class Field:
    name: str
    label: str
    field_type: FieldType
    required: bool = True
    default: Any = None
    options: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_error_msg: str | None = None
    max_error_msg: str | None = None
    help_text: str | None = None

    def as_json(self) -> dict[str, Any]:
        options = ["yes", "no"] if self.field_type == "bool" else self.options
        return {
            "name": self.name,
            "label": self.label,
            "field_type": self.field_type,
            "required": self.required,
            "default": self.default,
            "options": None if options is None else list(options),
            "minimum": self.minimum,
            "maximum": self.maximum,
            "min_error_msg": self.min_error_msg,
            "max_error_msg": self.max_error_msg,
            "help_text": self.help_text,
        }

    def read(self, raw: Any) -> Any:
        """The input as this field's type, within its bounds; InputError with the reference's text otherwise."""
        value = self._typed(raw)
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                self._check_bounds(number)
        return value

    def _typed(self, raw: Any) -> Any:
        name = self.name
        if self.field_type in ("float", "int"):
            number = _number(raw)
            if number is None or (self.field_type == "int" and not number.is_integer()):
                kind = "integer" if self.field_type == "int" else "number"
                raise InputError(f"Invalid '{name}', expected a {kind}.")
            return int(number) if self.field_type == "int" else number
        if self.field_type == "bool":
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower() if isinstance(raw, (str, int)) else None
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise InputError(f"Invalid '{name}', expected yes or no.")
        if self.field_type == "float_list":
            items = raw.split(",") if isinstance(raw, str) else raw
            numbers = (
                [_number(item) for item in items] if isinstance(items, list) else [None]
            )
            if not numbers or any(n is None for n in numbers):
                raise InputError(f"Invalid '{name}', expected list of numbers.")
            return numbers
        if not isinstance(raw, str) or not raw.strip():
            raise InputError(f"Invalid '{name}', expected text.")
        if self.field_type == "choice" and raw not in (self.options or ()):
            raise InputError(
                f"Invalid '{name}', expected one of: {', '.join(self.options or ())}."
            )
        return raw.strip()

    def _check_bounds(self, number: float) -> None:
        if self.minimum is not None and number < self.minimum:
            raise InputError(
                self.min_error_msg or f"'{self.name}' must be >= {self.minimum:g}."
            )
        if self.maximum is not None and number > self.maximum:
            raise InputError(
                self.max_error_msg or f"'{self.name}' must be <= {self.maximum:g}."
            )


def _number(raw: Any) -> float | None:
    """A finite number from a JSON number or a numeric string; None otherwise (booleans are not numbers)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, (int, float)) and math.isfinite(raw):
        return float(raw)
    return None


@frozen
class Action:
    """Hardware work a step starts as a task: ``run`` does it and returns its result; ``done`` files the
    result in the session and names the next step."""

    label: str
    run: Callable[[Bench], Awaitable[dict[str, Any]]]
    done: Callable[[Session, dict[str, Any]], str]


@frozen
class Step:
    step_id: str
    step_type: StepType
    title: str
    body: str = ""
    fields: tuple[Field, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    # For an action step: what it runs (not shown to clients).
    action: Action | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "step_type": self.step_type,
            "title": self.title,
            "body": self.body,
            "fields": [f.as_json() for f in self.fields],
            "metadata": self.metadata,
        }

    def read(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Each field's value from ``inputs``: a missing optional field takes its default."""
        values = {}
        for f in self.fields:
            raw = inputs.get(f.name)
            if raw is None or (
                isinstance(raw, str) and not raw.strip() and f.field_type != "string"
            ):
                if f.required:
                    raise InputError(f"Missing '{f.name}'.")
                values[f.name] = f.default
                continue
            values[f.name] = f.read(raw)
        return values


def chart(
    title: str,
    x_label: str,
    y_label: str,
    series: list[tuple[str, str, list[tuple[float, float]]]],
) -> dict[str, Any]:
    """The reference's ``chart`` metadata: series of (id, label, points)."""
    return {
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "series": [
            {"id": sid, "label": label, "points": [{"x": x, "y": y} for x, y in points]}
            for sid, label, points in series
        ],
    }


def line_review(
    formula: str,
    title: str,
    x_label: str,
    y_label: str,
    data: Mapping[str, Any],
    xs: list[float],
    ys: list[float],
    x_range: tuple[float, float],
) -> Step:
    """The step that shows a fitted line over its measurements before it is saved."""
    slope, bias = data["coefficients"]
    points = list(zip(xs, ys, strict=True))
    line = [(x, slope * x + bias) for x in x_range]
    return Step(
        "review",
        "result",
        "Review the fit",
        f"{formula.format(slope=slope, bias=bias)} Continue to save it as the active calibration.",
        metadata={"chart": chart(title, x_label, y_label, [("measured", "Measured", points), ("fit", "Fit", line)])},
    )
