"""The four LED channels A-D: one place that writes them, publishes their state, and honours locks.

The OD reading holds the IR channel (and, while it reads, keeps the others
dark); other jobs' changes to a held channel are skipped, as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .unit_state import LED_CHANNELS

if TYPE_CHECKING:
    from .base import Job


def check_changes(changes: Mapping[str, float]) -> None:
    for channel, percent in changes.items():
        if channel not in LED_CHANNELS:
            raise ValueError(
                f"LED channel must be one of {', '.join(LED_CHANNELS)}, not {channel!r}"
            )
        if not 0 <= percent <= 100:
            raise ValueError(
                f"LED intensity is a percentage 0-100, not {percent} for channel {channel}"
            )


async def change_leds(
    job: Job, changes: Mapping[str, float], *, source: str, verbose: bool = True
) -> dict[str, float]:
    """Write the channels not held by another job; publish each change and the full state. Returns what changed."""
    check_changes(changes)
    state = job.context.unit_state
    changed: dict[str, float] = {}
    for channel, percent in changes.items():
        holder = state.locked_leds.get(channel)
        if holder is not None and holder != job.job_name:
            job.log.debug(f"LED {channel} is held by {holder}; not changed")
            continue
        await job.hardware.leds.set_led(LED_CHANNELS.index(channel), percent)
        state.leds[channel] = percent
        changed[channel] = percent
        if verbose:
            event = {
                "channel": channel,
                "intensity": percent,
                "source_of_event": source,
                "timestamp": job.now_iso(),
            }
            job.send_json(
                f"pioreactor/{job.unit}/{job.experiment}/led_change_events",
                event,
                qos=0,
            )
    job.send_json(
        f"pioreactor/{job.unit}/{job.experiment}/leds/intensity",
        dict(state.leds),
        qos=0,
        retain=True,
    )
    return changed


def hold_leds(job: Job, channels: list[str]) -> None:
    """Reserve channels for ``job`` until ``release_leds``; a channel held by another job raises ValueError."""
    state = job.context.unit_state
    for channel in channels:
        holder = state.locked_leds.get(channel)
        if holder is not None and holder != job.job_name:
            raise ValueError(f"LED {channel} is held by {holder}")
    for channel in channels:
        state.locked_leds[channel] = job.job_name


def release_leds(job: Job) -> None:
    state = job.context.unit_state
    for channel in [
        c for c, holder in state.locked_leds.items() if holder == job.job_name
    ]:
        del state.locked_leds[channel]
