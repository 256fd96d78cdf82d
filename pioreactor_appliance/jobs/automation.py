"""Automations: jobs named ``<type>_automation`` whose behaviour is picked by ``automation_name``.

Every automation publishes ``automation_name`` and ``latest_event``, and on each
change of a settable setting a non-retained ``<job>_settings`` record (the
settings JSON base64-encoded, as the reference's leader stores it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import frozen
from twisted.internet.defer import Deferred

from .base import Job
from .context import JobContext
from .settings import Option, Setting

BASE_SETTINGS: dict[str, Setting] = {
    "automation_name": Setting("string"),
    "latest_event": Setting("AutomationEvent"),
}


@frozen
class Event:
    """What an automation did on one run; ``NoEvent`` when it decided to do nothing."""

    event_name: str
    message: str = ""
    data: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "message": self.message,
            "data": dict(self.data) if self.data is not None else None,
        }


def no_event(message: str = "") -> Event:
    return Event("NoEvent", message)


class Automation(Job):
    """Subclass per automation; set ``automation_type``, ``automation_name``, settings and options."""

    automation_type: ClassVar[str]
    automation_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "automation_type" in cls.__dict__:
            cls.job_name = f"{cls.automation_type}_automation"
        # Every automation answers to --automation-name, and carries the shared settings.
        cls.options = {
            "automation_name": Option("string", help="which automation"),
            **cls.__dict__.get("options", cls.options),
        }
        cls.published_settings = {
            **BASE_SETTINGS,
            **cls.__dict__.get("published_settings", cls.published_settings),
        }

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self.started_at = self.now_iso()

    async def on_init(self) -> None:
        self.publish("automation_name", self.automation_name)

    def record_event(self, event: Event) -> None:
        """Publish ``latest_event``, and log it unless it is a NoEvent."""
        self.publish("latest_event", event.as_json())
        if event.event_name != "NoEvent":
            self.log.info(
                f"{event.event_name}: {event.message}"
                if event.message
                else event.event_name
            )

    def publish(self, name: str, value: Any) -> None:
        super().publish(name, value)
        setting = self.published_settings.get(name)
        # A value cleared at the stop needs no record: the stop's own, with ended_at, is out.
        if (
            setting is not None
            and setting.settable
            and value is not None
            and self.state.value != "disconnected"
        ):
            self._publish_settings_record()

    def _publish_settings_record(self, ended_at: str | None = None) -> Deferred[None]:
        settable = {
            name: self.values.get(name)
            for name, s in self.published_settings.items()
            if s.settable
        }
        record = {
            "pioreactor_unit": self.unit,
            "experiment": self.experiment,
            "started_at": self.started_at,
            "ended_at": ended_at,
            "automation_name": self.automation_name,
            "settings": base64.b64encode(json.dumps(settable).encode("utf-8")).decode(
                "ascii"
            ),
        }
        return self.send_json(
            f"{self.topic_prefix}/{self.job_name}_settings", record, qos=2
        )

    def on_disconnected(self) -> Any:
        self._publish_settings_record(ended_at=self.now_iso())
