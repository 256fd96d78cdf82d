"""Small jobs that exercise the framework without hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.jobs.base import Job
from pioreactor_appliance.jobs.manager import JobManager
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import Option, Setting
from pioreactor_appliance.jobs.unit_state import PersistentCache, UnitState

from .broker import FakeBroker


class Counter(Job):
    """Counts every ``interval`` seconds; refuses a negative interval."""

    job_name = "counter"
    published_settings = {
        "count": Setting("integer"),
        "interval": Setting("float", settable=True, unit="s"),
        "label": Setting("string", settable=True),
        "kept": Setting("string", persist=True),
    }
    options = {
        "interval": Option("float", default=5.0, minimum=0.1),
        "label": Option("string", default="plain"),
    }

    async def on_init(self) -> None:
        self.count = 0
        self.publish("count", 0)
        self.publish("interval", self.options_given["interval"])
        self.publish("label", self.options_given["label"])
        self.publish("kept", "yes")
        self.loop = self.every(self.options_given["interval"], self.tick, now=False)

    def __init__(self, context: Any, options: Any, args: list[str]) -> None:
        super().__init__(context, options, args)
        self.options_given = options
        self.slept = self.woke = self.released = 0

    def tick(self) -> None:
        self.count += 1
        self.publish("count", self.count)

    def set_interval(self, value: float) -> None:
        if value <= 0:
            raise ValueError("the interval must be positive")
        self.publish("interval", value)
        self.loop.change_interval(value)

    def on_sleeping(self) -> None:
        self.slept += 1

    def on_waking(self) -> None:
        self.woke += 1

    def on_disconnected(self) -> None:
        self.released += 1


class Explodes(Job):
    """Raises on its third tick."""

    job_name = "explodes"
    stop_order = 0

    async def on_init(self) -> None:
        self.ticks = 0
        self.every(1.0, self.tick, now=False)

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks == 3:
            raise RuntimeError("the motor caught fire")


class NeverStarts(Job):
    job_name = "never_starts"

    async def on_init(self) -> None:
        raise RuntimeError("no sensor at 0x4F")


def toy_manager(
    case: TestCase,
    *kinds: Any,
    clock: Clock | None = None,
    broker: FakeBroker | None = None,
) -> tuple[JobManager, FakeBroker, Clock]:
    clock = clock or Clock()
    broker = broker or FakeBroker()
    data_dir = Path(case.mktemp())
    data_dir.mkdir()
    registry = Registry({k.job_name: k for k in kinds})
    cache = PersistentCache(data_dir / "storage" / "local_cache.json", reactor)  # its writer thread reports to the real reactor
    case.addCleanup(cache.close)
    state = UnitState(cache)
    manager = JobManager(
        registry,
        clock,
        "pio1",
        "leader",
        Config.defaults(),
        None,
        state,
        data_dir,
        broker.connect,
    )
    manager.startService()
    return manager, broker, clock


class FailsWhenReady(Job):
    """Its loop would run, but on_ready raises first."""

    job_name = "fails_when_ready"

    async def on_init(self) -> None:
        self.ticks = 0
        self.every(1.0, self.tick)

    def tick(self) -> None:
        self.ticks += 1

    def on_ready(self) -> None:
        raise RuntimeError("the LED driver did not answer")
