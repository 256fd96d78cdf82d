"""Calibrations the jobs apply: curves from the reference's YAML files, and which one is active per device.

Files live at ``storage/calibrations/<device>/<name>.yaml`` in the data
directory; the active name per device is kept in the unit's persistent cache.
Curves are ``poly`` (coefficients, highest power first) or ``spline``/``akima``
(knots, and per interval ``[a, b, c, d]`` in powers of ``x - knot``; the end
intervals extrapolate). ``y_to_x`` inverts numerically, preferring a root
inside the recorded range, because curves fitted to a handful of points often
turn over outside it.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

from .jobs.unit_state import PersistentCache

ACTIVE_NAMESPACE = "active_calibrations"
CALIBRATIONS_DIR = "storage/calibrations"
# One filename component: tokens of [A-Za-z0-9._-] joined by single spaces, not
# starting with "." or "-" (so never "." or ".."), short enough for "<name>.yaml".
NAME = re.compile(r"^(?![.-])[A-Za-z0-9._-]+(?: [A-Za-z0-9._-]+)*$")
NAME_MAX = 250
SCAN_STEPS = 400


class CalibrationError(ValueError):
    """A calibration file that cannot be used, or a value its curve cannot invert."""


@frozen
class Curve:
    kind: str  # poly, spline or akima
    coefficients: tuple[Any, ...]
    knots: tuple[float, ...] = ()

    def __call__(self, x: float) -> float:
        if self.kind == "poly":
            y = 0.0
            for c in self.coefficients:
                y = y * x + c
            return y
        i = min(
            max(bisect.bisect_right(self.knots, x) - 1, 0), len(self.coefficients) - 1
        )
        u = x - self.knots[i]
        a, b, c, d = self.coefficients[i]
        return a + u * (b + u * (c + u * d))

    @classmethod
    def from_yaml(cls, data: Any) -> Curve:
        if not isinstance(data, dict) or data.get("type") not in (
            "poly",
            "spline",
            "akima",
        ):
            raise CalibrationError("curve_data_ must have type poly, spline or akima")
        coefficients = data.get("coefficients")
        if data["type"] == "poly":
            if (
                not isinstance(coefficients, list)
                or not coefficients
                or not all(_is_number(c) for c in coefficients)
            ):
                raise CalibrationError(
                    "a poly curve needs a non-empty list of numeric coefficients"
                )
            return cls("poly", tuple(float(c) for c in coefficients))
        knots = data.get("knots")
        if (
            not isinstance(knots, list)
            or len(knots) < 2
            or not all(_is_number(k) for k in knots)
            or knots != sorted(knots)
        ):
            raise CalibrationError(
                "a spline needs at least two increasing numeric knots"
            )
        if (
            not isinstance(coefficients, list)
            or len(coefficients) != len(knots) - 1
            or not all(
                isinstance(row, list)
                and len(row) == 4
                and all(_is_number(c) for c in row)
                for row in coefficients
            )
        ):
            raise CalibrationError(
                "a spline needs one [a, b, c, d] row per interval between knots"
            )
        return cls(
            data["type"],
            tuple(tuple(float(c) for c in row) for row in coefficients),
            tuple(float(k) for k in knots),
        )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _roots(f: Callable[[float], float], lo: float, hi: float) -> list[float]:
    """Every sign change of ``f`` on a grid over [lo, hi], refined by bisection."""
    roots = []
    step = (hi - lo) / SCAN_STEPS
    x0, f0 = lo, f(lo)
    for i in range(1, SCAN_STEPS + 1):
        x1 = lo + i * step
        f1 = f(x1)
        if f0 == 0:
            roots.append(x0)
        elif f0 * f1 < 0:
            a, b, fa = x0, x1, f0
            for _ in range(60):
                m = (a + b) / 2
                fm = f(m)
                if fa * fm <= 0:
                    b = m
                else:
                    a, fa = m, fm
            roots.append((a + b) / 2)
        x0, f0 = x1, f1
    return roots


@frozen
class Calibration:
    calibration_type: str
    calibration_name: str
    curve: Curve
    recorded_x: tuple[float, ...]
    fields: dict[
        str, Any
    ]  # everything else in the file: hz, dc, angle, ir_led_intensity...

    def x_to_y(self, x: float) -> float:
        return self.curve(x)

    def y_to_x(self, y: float) -> float:
        """The x giving ``y``: a root inside the recorded range (the smallest), else the nearest one."""
        lo, hi = (
            (min(self.recorded_x), max(self.recorded_x))
            if self.recorded_x
            else (0.0, 1.0)
        )
        span = max(hi - lo, 1e-9)
        roots = _roots(lambda x: self.curve(x) - y, lo - span, hi + span)
        if not roots:
            raise CalibrationError(
                f"{self.calibration_name}: no x gives y={y:g} near the recorded range {lo:g}-{hi:g}"
            )
        inside = [r for r in roots if lo <= r <= hi]
        if inside:
            return min(inside)
        return min(roots, key=lambda r: min(abs(r - lo), abs(r - hi)))

    @property
    def y_range(self) -> tuple[float, float]:
        """The curve's values at the ends of the recorded range."""
        lo, hi = (
            (min(self.recorded_x), max(self.recorded_x))
            if self.recorded_x
            else (0.0, 1.0)
        )
        ends = (self.curve(lo), self.curve(hi))
        return min(ends), max(ends)

    @classmethod
    def from_text(cls, text: str) -> Calibration:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CalibrationError(f"not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise CalibrationError("a calibration is a YAML mapping")
        for key in ("calibration_type", "calibration_name", "curve_data_"):
            if key not in data:
                raise CalibrationError(f"missing field {key}")
        recorded = data.get("recorded_data") or {}
        xs = recorded.get("x", []) if isinstance(recorded, dict) else []
        if not isinstance(xs, list) or not all(_is_number(x) for x in xs):
            raise CalibrationError("recorded_data.x must be a list of numbers")
        rest = {
            k: v for k, v in data.items() if k not in ("curve_data_", "recorded_data")
        }
        return cls(
            str(data["calibration_type"]),
            str(data["calibration_name"]),
            Curve.from_yaml(data["curve_data_"]),
            tuple(float(x) for x in xs),
            rest,
        )


def valid_name(name: str) -> bool:
    """The reference's rule for a device, calibration or estimator name: a single, plain filename component."""
    return len(name) <= NAME_MAX and NAME.fullmatch(name) is not None


def calibration_path(data_dir: Path, device: str, name: str) -> Path:
    if not valid_name(device) or not valid_name(name):
        raise CalibrationError(f"bad calibration device or name: {device!r}, {name!r}")
    return data_dir / CALIBRATIONS_DIR / device / f"{name}.yaml"


def active_calibration(
    data_dir: Path, cache: PersistentCache, device: str
) -> Deferred[Calibration | None]:
    """The device's active calibration, read off the reactor thread; None when none is active."""
    name = cache.get(ACTIVE_NAMESPACE, device)
    if name is None:
        return succeed(None)
    path = calibration_path(data_dir, device, name)

    def read() -> Calibration:
        try:
            return Calibration.from_text(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise CalibrationError(
                f"active {device} calibration {name!r} cannot be read: {e.strerror}"
            ) from None

    return deferToThread(read)
