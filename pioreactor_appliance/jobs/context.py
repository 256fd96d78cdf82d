"""What a job is given: who and where it is, a clock, its broker connection, the hardware, the config.

Jobs take everything from here rather than from globals, so a test can hand a
job a ``Clock``, an in-memory broker and a simulated Pioreactor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..config import Config
from ..timestamps import iso_utc

if TYPE_CHECKING:
    from ..hardware.unit import Hardware
    from .base import Job
    from .unit_state import UnitState

LEVELS = ("debug", "info", "notice", "warning", "error")
_log = Logger()


class Message(Protocol):
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Bus(Protocol):
    """A broker connection, as ``mqtt.MqttClient`` provides it."""

    def publish(
        self,
        topic: str,
        payload: str | bytes | None,
        qos: int = 0,
        retain: bool = False,
    ) -> Deferred[None]: ...

    def subscribe(
        self, topic_filter: str, callback: Callable[[Any], None], qos: int = 1
    ) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...


class RunningJobs(Protocol):
    """The manager, as jobs see it: to find their peers (the OD reading a stirrer dodges, the pumps a dosing automation drives)."""

    def get(self, job_name: str) -> Job | None: ...

    def run_action(
        self, job_name: str, experiment: str, options: dict[str, Any], source: str
    ) -> Deferred[Job]: ...


@define
class JobLog:
    """Log lines that go to the process log and to the experiment's MQTT log topic, where the UI shows them."""

    bus: Bus
    clock: IReactorTime
    unit: str
    experiment: str
    task: str
    source: str = "app"

    def _emit(self, level: str, message: str) -> None:
        payload = {
            "message": message,
            "level": level.upper(),
            "task": self.task,
            "timestamp": iso_utc(self.clock.seconds()),
            "source": self.source,
        }
        getattr(
            _log, "warn" if level == "notice" else {"warning": "warn"}.get(level, level)
        )("{unit}/{task}: {message}", unit=self.unit, task=self.task, message=message)
        d = self.bus.publish(
            f"pioreactor/{self.unit}/{self.experiment}/logs/{self.source}/{level}",
            json.dumps(payload, separators=(",", ":")),
            qos=1,
        )
        d.addErrback(
            lambda _: None
        )  # the process log has it; a broker outage is reported elsewhere

    def debug(self, message: str) -> None:
        self._emit("debug", message)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def notice(self, message: str) -> None:
        self._emit("notice", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def error(self, message: str) -> None:
        self._emit("error", message)


@define
class LeaderServices:
    """What a leader-only job (the experiment-profile runner) reaches the cluster and the database with."""

    fanout: Any  # fanout.FanOut: request(method, units, path, json) -> {unit: envelope}
    database: Any  # store.database.Database


@define
class JobContext:
    unit: str
    experiment: str
    clock: IReactorTime
    bus: Bus
    config: Config
    hardware: Hardware | None
    unit_state: UnitState
    jobs: RunningJobs
    data_dir: Path
    leader: str
    log: JobLog
    source: str = "user"
    env: dict[str, str] = field(factory=dict)
    close: Callable[[], Any] = lambda: None  # closes the job's broker connection
    leader_services: LeaderServices | None = None  # on the leader only
