"""What every protocol family shares: the bench it drives, its settings, and saving what it measured."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import yaml
from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from ..calibration_files import CALIBRATIONS, write_file
from ..config import Config, ConfigError
from ..jobs.manager import JobManager
from ..jobs.unit_state import PersistentCache
from .session import Session
from .steps import Step

SECTION = "calibration_sessions"


def _seconds_list(
    config: Config, key: str, low: float, high: float
) -> tuple[float, ...]:
    text = config.get_str(SECTION, key)
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"[{SECTION}] {key} is a comma-separated list of numbers, not {text!r}"
        ) from None
    if len(values) < 2 or not all(low <= v <= high for v in values):
        raise ConfigError(
            f"[{SECTION}] {key} needs two or more values within {low:g}-{high:g}, not {text!r}"
        )
    return values


@frozen
class SessionSettings:
    """``[calibration_sessions]``: what the hardware steps run and how long they wait, checked once at start."""

    pump_durations: tuple[float, ...]
    stirring_duty_cycles: tuple[float, ...]
    stirring_settle_seconds: float
    stirring_measure_seconds: float
    od_settle_seconds: float

    @classmethod
    def from_config(cls, config: Config) -> SessionSettings:
        pump_max = config.get_float("hardware", "pump_max_seconds")
        settle = {
            key: config.get_float(SECTION, key)
            for key in (
                "stirring_settle_seconds",
                "stirring_measure_seconds",
                "od_settle_seconds",
            )
        }
        for key, value in settle.items():
            if not 0 <= value <= 600:
                raise ConfigError(f"[{SECTION}] {key} is 0-600 s, not {value:g}")
        return cls(
            pump_durations=_seconds_list(
                config, "pump_durations_seconds", 0.1, pump_max
            ),
            stirring_duty_cycles=_seconds_list(config, "stirring_duty_cycles", 0, 100),
            **settle,
        )


@frozen
class Bench:
    """What a session drives and where it saves: this unit's hardware, clock, jobs and storage."""

    unit: str
    clock: IReactorTime
    config: Config
    hardware: Any  # hardware.unit.Hardware
    jobs: JobManager
    data_dir: Path
    cache: PersistentCache
    settings: SessionSettings

    def running(self, job_name: str) -> bool:
        return self.jobs.get(job_name) is not None


class Saved(TypedDict):
    device: str
    calibration_name: str
    path: str


async def save_calibration(bench: Bench, device: str, fields: dict[str, Any]) -> Saved:
    """Write ``fields`` (type, curve, recorded data and the type's extras) as the device's new active calibration.

    The file is checked as an uploaded one would be before it is written.
    """
    now = datetime.fromtimestamp(bench.clock.seconds(), tz=UTC).replace(microsecond=0)
    name = f"{device}-{now:%Y-%m-%d_%H-%M-%S}"
    document = {
        "calibration_type": fields.pop("calibration_type"),
        "calibration_name": name,
        "calibrated_on_pioreactor_unit": bench.unit,
        "created_at": now,
        **fields,
    }
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None)

    def store() -> Path:
        CALIBRATIONS.parse(text, device)
        return write_file(CALIBRATIONS, bench.data_dir, device, name, text)

    path = await deferToThread(store)
    await bench.cache.set(CALIBRATIONS.namespace, device, name)
    return {"device": device, "calibration_name": name, "path": str(path)}


def poly(coefficients: Sequence[float]) -> dict[str, Any]:
    return {"type": "poly", "coefficients": [round(c, 9) for c in coefficients]}


class Protocol:
    """One protocol for one device: its listing, its steps, and how a form step's values move it on.

    Subclasses set the class attributes and implement ``step`` and ``advance``.
    """

    protocol_name: ClassVar[str]
    priority: ClassVar[int] = 99
    title: ClassVar[str]
    description: ClassVar[str]
    requirements: ClassVar[tuple[str, ...]]

    def __init__(self, target_device: str) -> None:
        self.target_device = target_device

    def listing(self) -> dict[str, Any]:
        """The ``calibration_protocols`` item: ``{device}`` reads as the device's name, spaced."""
        spaced = self.target_device.replace("_", " ")
        return {
            "id": f"{self.target_device}_{self.protocol_name}",
            "target_device": self.target_device,
            "protocol_name": self.protocol_name,
            "priority": self.priority,
            "title": self.title.replace("{device}", spaced),
            "description": self.description.replace("{device}", spaced),
            "requirements": [r.replace("{device}", spaced) for r in self.requirements],
        }

    def precondition(self, bench: Bench) -> str | None:
        """Why a session cannot start now, or None."""
        return None

    def start_data(self, bench: Bench) -> dict[str, Any]:
        """A new session's ``data``: what it needs fixed from the start (e.g. the settings it runs with)."""
        return {}

    def step(self, session: Session) -> Step:
        """The session's current step."""
        raise NotImplementedError

    async def advance(
        self, session: Session, values: dict[str, Any], bench: Bench
    ) -> str | None:
        """Take a step's values (already typed and bounded); the next step's id, or None to stay."""
        raise NotImplementedError

    async def cleanup(self, bench: Bench) -> None:
        """Put what the protocol drives in its safe state: after an abort, or a failed action."""
