"""Calibration and estimator files on disk: checked as the reference's data model, read, written and zipped.

Everything here blocks (it reads and writes files), so the HTTP family runs it
with ``deferToThread``. Every path is built from names that passed
``valid_name`` and is then resolved and checked to be inside its root, so
neither a name nor a symlink can reach a file elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen
from twisted.logger import Logger

from .archives import pack
from .atomic_files import write_atomically
from .calibrations import (
    ACTIVE_NAMESPACE,
    CALIBRATIONS_DIR,
    Calibration,
    CalibrationError,
    valid_name,
)
from .limits import Limits
from .timestamps import parse_iso

log = Logger()

ESTIMATORS_DIR = "storage/estimators"
ACTIVE_ESTIMATORS = "active_estimators"
SUFFIX = ".yaml"

PUMP_DEVICES = ("media_pump", "alt_media_pump", "waste_pump")
OD_ANGLES = ("45", "90", "135", "180")
PD_CHANNELS = ("1", "2", "3", "4")

# calibration_type -> its extra fields (name -> check returning a problem or None), and its default x / y labels.
Check = Callable[[Any], "str | None"]


def _number(minimum: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            return "must be a number"
        if minimum is not None and value < minimum:
            return f"must be >= {minimum:g}"
        return None

    return check


def duty_problem(value: Any) -> str | None:
    """A pump's ``dc``: the PWM duty cycle (percent) it was calibrated at, and is run at."""
    problem = _number(0)(value)
    if problem is None and not 0 < value <= 100:
        return "must be a duty cycle in percent, more than 0 and at most 100"
    return problem


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if str(value) in choices else f"must be one of {', '.join(choices)}"

    return check


@frozen
class CalibrationType:
    fields: dict[str, Check]
    x: str
    y: str
    devices: tuple[
        str, ...
    ]  # the core devices this type calibrates; other (plugin) devices take any type


_OD_FIELDS: dict[str, Check] = {
    "ir_led_intensity": _number(0),
    "angle": _one_of(OD_ANGLES),
    "pd_channel": _one_of(PD_CHANNELS),
}
OD_DEVICES = ("od45", "od90", "od135", "od")
CALIBRATION_TYPES: dict[str, CalibrationType] = {
    "simple_peristaltic_pump": CalibrationType(
        {"hz": _number(0), "dc": duty_problem, "voltage": _number()},
        "Duration",
        "Volume",
        PUMP_DEVICES,
    ),
    "simple_stirring": CalibrationType(
        {"pwm_hz": _number(0), "voltage": _number()}, "DC %", "RPM", ("stirring",)
    ),
    "od": CalibrationType(_OD_FIELDS, "OD", "Voltage", OD_DEVICES),
    "od600": CalibrationType(_OD_FIELDS, "OD600", "Voltage", OD_DEVICES),
}
CORE_DEVICES = frozenset(d for t in CALIBRATION_TYPES.values() for d in t.devices)


def jsonable(value: Any, where: str = "the file") -> Any:
    """YAML's values as JSON: times as UTC ``...Z``; anything JSON cannot hold is refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CalibrationError(f"{where} is a time without a timezone")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{value.microsecond:06d}Z" if value.microsecond else "Z"
        )
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, where) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise CalibrationError(f"{where} is not a finite number")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise CalibrationError(f"{where} holds a {type(value).__name__}, which JSON cannot")


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a few aliases nested deep expand to billions of nodes once walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not accepted",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


def _mapping(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_PlainLoader)
    except yaml.YAMLError as e:
        raise CalibrationError(f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"the {what} file must be a YAML mapping")
    return data


def _timestamp(data: dict[str, Any]) -> None:
    created = data.get("created_at")
    if isinstance(created, str):
        try:
            created = parse_iso(created)
        except ValueError as e:
            raise CalibrationError(f"created_at: {e}") from None
    if not isinstance(created, datetime) or created.tzinfo is None:
        raise CalibrationError(
            "created_at must be a time with its timezone, e.g. 2026-01-05 12:00:00+00:00"
        )
    data["created_at"] = created


def _named(data: dict[str, Any], field: str) -> str:
    name = data.get(field)
    if not isinstance(name, str) or not valid_name(name):
        raise CalibrationError(
            f"{field} must be a plain name: letters, digits, '.', '_' and '-' (single spaces between), "
            "not starting with '.' or '-'"
        )
    return name


def parse_calibration(text: str, device: str | None = None) -> dict[str, Any]:
    """A calibration file as JSON, checked as the reference's data model (section 5); CalibrationError says why not.

    With ``device``, a core device must get a type that calibrates it (a pump
    curve on the stirring motor would make the job misbehave).
    """
    data = _mapping(text, "calibration")
    Calibration.from_text(text)  # the curve and recorded x, as the jobs read them
    kind_name = data["calibration_type"]
    kind = CALIBRATION_TYPES.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise CalibrationError(
            f"unknown calibration_type {kind_name!r}; known: {', '.join(sorted(CALIBRATION_TYPES))}"
        )
    _named(data, "calibration_name")
    if not isinstance(data.get("calibrated_on_pioreactor_unit"), str):
        raise CalibrationError(
            "missing field calibrated_on_pioreactor_unit (the unit's name)"
        )
    _timestamp(data)
    recorded = data.get("recorded_data")
    if (
        not isinstance(recorded, dict)
        or not isinstance(recorded.get("x"), list)
        or not isinstance(recorded.get("y"), list)
    ):
        raise CalibrationError("recorded_data must be {x: [...], y: [...]}")
    if len(recorded["x"]) != len(recorded["y"]):
        raise CalibrationError(
            "recorded_data.x and recorded_data.y must have the same length"
        )
    if any(_number()(v) for v in recorded["y"]):
        raise CalibrationError("recorded_data.y must be a list of numbers")
    for axis, default in (("x", kind.x), ("y", kind.y)):
        if not isinstance(data.setdefault(axis, default), str):
            raise CalibrationError(f"{axis} is the axis label, a string")
    for field, check in kind.fields.items():
        if field not in data:
            raise CalibrationError(
                f"missing field {field} (a {kind_name} calibration needs {', '.join(kind.fields)})"
            )
        problem = check(data[field])
        if problem:
            raise CalibrationError(f"{field} {problem}")
    if device in CORE_DEVICES and device not in kind.devices:
        fits = sorted(t for t, k in CALIBRATION_TYPES.items() if device in k.devices)
        raise CalibrationError(
            f"{device} takes a {' or '.join(fits)} calibration, not {kind_name}"
        )
    return jsonable(data)


def parse_estimator(text: str, device: str | None = None) -> dict[str, Any]:
    """An estimator file as JSON: a mapping with ``estimator_type`` and a plain ``estimator_name``."""
    data = _mapping(text, "estimator")
    if not isinstance(data.get("estimator_type"), str):
        raise CalibrationError("missing field estimator_type")
    _named(data, "estimator_name")
    return jsonable(data)


@frozen
class Kind:
    """Calibrations or estimators: where their files live, their pointers, how one is checked."""

    noun: str
    directory: str
    namespace: str
    name_field: str
    parse: Callable[..., dict[str, Any]]

    def root(self, data_dir: Path) -> Path:
        return data_dir / self.directory

    def path(self, data_dir: Path, device: str, name: str | None = None) -> Path:
        """The device's directory, or one file in it; the names must be plain (ValueError otherwise)."""
        if not valid_name(device) or (name is not None and not valid_name(name)):
            raise ValueError(f"bad {self.noun} device or name: {device!r}, {name!r}")
        folder = self.root(data_dir) / device
        return folder if name is None else folder / f"{name}{SUFFIX}"


CALIBRATIONS = Kind(
    "calibration",
    CALIBRATIONS_DIR,
    ACTIVE_NAMESPACE,
    "calibration_name",
    parse_calibration,
)
ESTIMATORS = Kind(
    "estimator", ESTIMATORS_DIR, ACTIVE_ESTIMATORS, "estimator_name", parse_estimator
)


class Escapes(Exception):
    """A path that resolves outside its root (a symlink pointing elsewhere)."""


def confined(path: Path, root: Path) -> Path:
    """``path`` resolved, if it stays inside ``root`` resolved."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise Escapes(f"{path} leads outside {root}")
    return real


def read_file(
    kind: Kind, data_dir: Path, device: str, name: str
) -> dict[str, Any] | None:
    """One file as JSON; None when it does not exist; CalibrationError when it cannot be used."""
    path = kind.path(data_dir, device, name)
    try:
        text = confined(path, kind.root(data_dir)).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, Escapes):
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot be read: {e}") from None
    return kind.parse(text, device)


def read_device(kind: Kind, data_dir: Path, device: str) -> list[dict[str, Any]] | None:
    """Every usable file of one device, by name; None when the device has no directory. Bad files are logged and skipped."""
    folder = kind.path(data_dir, device)
    try:
        if not confined(folder, kind.root(data_dir)).is_dir():
            return None
    except Escapes:
        return None
    found = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        name = path.name[: -len(SUFFIX)]
        if not valid_name(name):
            continue
        try:
            parsed = read_file(kind, data_dir, device, name)
        except CalibrationError as e:
            log.warn("Skipping {noun} {path}: {why}", noun=kind.noun, path=path, why=e)  # noqa: G010
            continue
        if parsed is not None:
            found.append(parsed)
    return found


def read_all(kind: Kind, data_dir: Path) -> dict[str, list[dict[str, Any]]] | None:
    """Every device's usable files; None when the root does not exist."""
    root = kind.root(data_dir)
    if not root.is_dir():
        return None
    devices: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(root.iterdir()):
        if valid_name(folder.name) and folder.is_dir():
            files = read_device(kind, data_dir, folder.name)
            if files is not None:
                devices[folder.name] = files
    return devices


def write_file(kind: Kind, data_dir: Path, device: str, name: str, text: str) -> Path:
    """Write ``text`` as the device's ``name`` file: a temporary file renamed over it, so a reader never sees half."""
    path = kind.path(data_dir, device, name)
    root = kind.root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    confined(path.parent, root).mkdir(exist_ok=True)
    confined(path, root)
    write_atomically(path, text)
    return path


def remove_file(kind: Kind, data_dir: Path, device: str, name: str) -> bool:
    """Delete one file; False when there was none."""
    path = kind.path(data_dir, device, name)
    try:
        confined(path, kind.root(data_dir))
        path.unlink()
    except (FileNotFoundError, NotADirectoryError, Escapes):
        return False
    return True


def zip_files(kind: Kind, data_dir: Path, limits: Limits) -> bytes | None:
    """Every ``<device>/<name>.yaml`` as it is on disk, zipped; None when the root does not exist.

    Only plain names inside the root go in, so a symlink cannot add a file from elsewhere.
    """
    root = kind.root(data_dir)
    if not root.is_dir():
        return None
    return pack(_stored_files(root), limits)


def _stored_files(root: Path) -> Iterator[tuple[Path, str]]:
    for folder in sorted(root.iterdir()):
        if not valid_name(folder.name) or not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            try:
                real = confined(path, root)
            except Escapes:
                continue
            if valid_name(path.name[: -len(SUFFIX)]) and real.is_file():
                yield real, f"{folder.name}/{path.name}"
