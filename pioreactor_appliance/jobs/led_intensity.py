"""The ``led_intensity`` action: set some of the LED channels A-D, leave the others as they are."""

from __future__ import annotations

from typing import Any

from zope.interface import provider

from .action import Action
from .leds import change_leds
from .registry import IJobKind
from .settings import Option
from .unit_state import LED_CHANNELS


@provider(IJobKind)
class LedIntensity(Action):
    job_name = "led_intensity"
    help = "Set LED channels A-D to an intensity (%)"
    stop_order = 0
    options = {
        **{
            channel: Option(
                "float",
                help=f"channel {channel}, % (unset: unchanged)",
                minimum=0,
                maximum=100,
            )
            for channel in LED_CHANNELS
        },
        "source_of_event": Option(
            "string", default="user", help="who asked, for led_change_events"
        ),
    }

    def __init__(self, context: Any, options: Any, args: list[str]) -> None:
        super().__init__(context, options, args)
        self.changes = {
            channel: options[channel]
            for channel in LED_CHANNELS
            if options.get(channel) is not None
        }
        self.source_of_event = options.get("source_of_event") or "user"

    def act(self) -> Any:
        return change_leds(self, self.changes, source=self.source_of_event)
