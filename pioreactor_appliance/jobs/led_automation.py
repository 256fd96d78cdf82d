"""LED automations (``led_automation``): ``silent`` leaves the LEDs alone; ``light_dark_cycle`` lights C and D by the clock.

The cycle starts lit and flips at each phase boundary with a one-shot timer,
so a change of a duration moves the boundary of the phase under way. A change
that finds C or D held by another job (OD reading keeps them dark while it
reads) is tried again shortly, not left undone for the rest of the phase.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from zope.interface import provider

from .automation import Automation, Event, no_event
from .leds import change_leds
from .registry import IAutomationKind
from .settings import Option, Setting


class LedAutomation(Automation):
    automation_type = "led"

    @property
    def source_of_event(self) -> str:
        return f"{self.job_name}:{self.automation_name}"


@provider(IAutomationKind)
class Silent(LedAutomation):
    automation_name = "silent"
    help = "Leave the LEDs as they are"

    def on_ready(self) -> None:
        self.record_event(no_event("the silent automation changes nothing"))


CYCLE_CHANNELS = ("C", "D")
HELD_RETRY_SECONDS = 0.3  # an OD reading holds the channels for a fraction of a second


@provider(IAutomationKind)
class LightDarkCycle(LedAutomation):
    automation_name = "light_dark_cycle"
    help = "Channels C and D on for light_duration_minutes, then off for dark_duration_minutes"
    published_settings = {
        "light_intensity": Setting("float", settable=True, unit="%"),
        "light_duration_minutes": Setting("float", settable=True, unit="min"),
        "dark_duration_minutes": Setting("float", settable=True, unit="min"),
    }
    options = {
        "light_intensity": Option("float", default=5.0, minimum=0, maximum=100),
        "light_duration_minutes": Option("float", default=960.0, minimum=0),
        "dark_duration_minutes": Option("float", default=480.0, minimum=0),
    }

    def __init__(self, context: Any, options: Any, args: list[str]) -> None:
        super().__init__(context, options, args)
        self._given = options
        self.lit = False
        self._phase_started = 0.0
        self._boundary: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None

    async def on_init(self) -> None:
        await super().on_init()
        for name in ("light_intensity", "light_duration_minutes", "dark_duration_minutes"):
            self.publish(name, self._given[name])

    def on_ready(self) -> Any:
        return self._enter_phase(lit=True)

    def _phase_minutes(self) -> float:
        return self.values[
            "light_duration_minutes" if self.lit else "dark_duration_minutes"
        ]

    async def _enter_phase(self, lit: bool) -> None:
        self.lit = lit
        self._phase_started = self.clock.seconds()
        self._schedule_boundary()
        await self._apply_light()

    def _schedule_boundary(self) -> None:
        if self._boundary is not None and self._boundary.active():
            self._boundary.cancel()
        left = self._phase_started + self._phase_minutes() * 60 - self.clock.seconds()
        self._boundary = self.later(max(left, 0.0), self._enter_phase, not self.lit)

    async def _apply_light(self, channels: tuple[str, ...] = CYCLE_CHANNELS) -> None:
        """Set ``channels`` for the phase; those held by another job are tried again shortly."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        intensity = self.values["light_intensity"] if self.lit else 0.0
        changed = await change_leds(
            self, dict.fromkeys(channels, intensity), source=self.source_of_event
        )
        held = tuple(c for c in channels if c not in changed)
        if held:
            self._retry = self.later(HELD_RETRY_SECONDS, self._apply_light, held)
        if channels != CYCLE_CHANNELS and not changed:
            return  # still held: the phase's event was recorded on the first try
        state = "on" if self.lit else "off"
        self.record_event(
            Event(
                "ChangedLedIntensity",
                f"Lights {state}: {', '.join(changed)} at {intensity:g} %",
                changed,
            )
            if changed
            else no_event(
                f"Lights {state}, but {', '.join(CYCLE_CHANNELS)} are held by another job"
            )
        )

    def set_light_intensity(self, value: float) -> Any:
        if not 0 <= value <= 100:
            raise ValueError("light_intensity is a percentage, 0-100")
        self.publish("light_intensity", value)
        return self._apply_light() if self.lit else None

    def set_light_duration_minutes(self, value: float) -> None:
        self._set_duration("light_duration_minutes", value, lit=True)

    def set_dark_duration_minutes(self, value: float) -> None:
        self._set_duration("dark_duration_minutes", value, lit=False)

    def _set_duration(self, name: str, minutes: float, lit: bool) -> None:
        if minutes < 0:
            raise ValueError(f"{name} cannot be negative")
        self.publish(name, minutes)
        if self.lit is lit and self._boundary is not None:
            self._schedule_boundary()

    async def on_disconnected(self) -> None:
        super().on_disconnected()
        await change_leds(
            self, dict.fromkeys(CYCLE_CHANNELS, 0.0), source=self.source_of_event
        )
