"""Growth rate and filtered OD from the OD readings, one filter update per reading.

The first readings settle the optics and are skipped; the next ones (restarted
by a dosing event) give each channel's normalisation factor and noise. The
factors are kept per experiment, so a restarted job reports ``od_filtered`` on
the same scale as before. After a dosing event the filter expects a jump.
"""

from __future__ import annotations

import json
from typing import Any

from zope.interface import provider

from ..config import ConfigError
from ..timestamps import parse_iso
from .base import Job, JobFailed
from .growth_filter import GrowthFilter, normalisation_factors
from .registry import IJobKind
from .settings import Setting

SKIPPED_READINGS = 5  # the first readings after a start are skipped
DILUTION_UPDATES = 2  # updates after a dosing event that expect a jump
NORMALISATION_NAMESPACE = "od_normalization"


@provider(IJobKind)
class GrowthRateCalculator(Job):
    job_name = "growth_rate_calculating"
    help = (
        "Estimates the culture's growth rate (per hour) and a filtered, normalised OD."
    )
    published_settings = {
        "growth_rate": Setting("GrowthRate", unit="h⁻¹"),
        "od_filtered": Setting("ODFiltered"),
    }

    async def on_init(self) -> None:
        section = "growth_rate_calculating.config"
        try:
            self.samples = self.config.get_int(section, "samples_for_od_statistics")
            self.threshold = self.config.get_float(section, "ekf_outlier_std_threshold")
        except ConfigError as e:
            raise JobFailed(str(e)) from None
        if self.samples < 2:
            raise JobFailed(
                f"[{section}] samples_for_od_statistics must be 2 or more, not {self.samples}"
            )
        if not self.threshold > 2:
            raise JobFailed(
                f"[{section}] ekf_outlier_std_threshold must be above 2, not {self.threshold}: "
                "a lower threshold would treat ordinary readings as outliers"
            )
        self.filter: GrowthFilter | None = None
        self.channels: list[str] = []
        self.factors: dict[str, float] = (
            self.context.unit_state.cache.get(NORMALISATION_NAMESPACE, self.experiment)
            or {}
        )
        self._skip = SKIPPED_READINGS
        self._warmup: list[tuple[float, dict[str, float]]] = []
        self._last_time: float | None = None
        self._dilution_updates = 0
        base = f"pioreactor/{self.unit}/{self.experiment}"
        self.subscribe(f"{base}/od_reading/ods", self._on_ods)
        self.subscribe(f"{base}/dosing_events", self._on_dosing)

    def _on_dosing(self, message: Any) -> None:
        if self.filter is None:
            self._warmup.clear()  # the culture just changed: start the statistics again
        else:
            self._dilution_updates = DILUTION_UPDATES

    def _on_ods(self, message: Any) -> None:
        try:
            reading = json.loads(message.payload)
            timestamp = reading["timestamp"]
            seconds = parse_iso(timestamp).timestamp()
            ods = {channel: float(r["od"]) for channel, r in reading["ods"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.log.warning(
                f"growth_rate_calculating: ignored an OD message it cannot read ({e})"
            )
            return
        if not ods:
            return
        if self._skip > 0:
            self._skip -= 1
            return
        if self.filter is None:
            self._collect(seconds, ods)
            return
        if sorted(ods) != self.channels:
            self.log.warning(
                f"growth_rate_calculating: OD channels changed from {self.channels} to {sorted(ods)}; ignored"
            )
            return
        if self._last_time is not None and seconds <= self._last_time:
            return  # a repeated or out-of-order reading
        dt_hours = (
            (seconds - self._last_time) / 3600 if self._last_time is not None else 0.0
        )
        self._last_time = seconds
        self.filter.update(
            self._normalised(ods), dt_hours, recent_dilution=self._dilution_updates > 0
        )
        self._dilution_updates = max(self._dilution_updates - 1, 0)
        self._publish(timestamp)

    def _collect(self, seconds: float, ods: dict[str, float]) -> None:
        if self._warmup and sorted(ods) != sorted(self._warmup[0][1]):
            self._warmup.clear()  # the channels changed mid-way: start again
        self._warmup.append((seconds, ods))
        if len(self._warmup) < self.samples:
            return
        self.channels = sorted(ods)
        by_channel = {
            c: [values[c] for _, values in self._warmup] for c in self.channels
        }
        if sorted(self.factors) != self.channels:
            self.factors = normalisation_factors(by_channel)
            self.context.unit_state.cache.set(
                NORMALISATION_NAMESPACE, self.experiment, self.factors
            )
        times = [t for t, _ in self._warmup]
        normalised = [
            [v / self.factors[c] for v in by_channel[c]] for c in self.channels
        ]
        self.filter = GrowthFilter.from_warmup(times, normalised, self.threshold)
        self._last_time = times[-1]
        self._warmup.clear()
        self.log.info(
            f"growth_rate_calculating: normalising OD by {', '.join(f'{c}: {f:.4g}' for c, f in self.factors.items())}"
        )

    def _normalised(self, ods: dict[str, float]) -> list[float]:
        return [ods[c] / self.factors[c] for c in self.channels]

    def _publish(self, timestamp: str) -> None:
        assert self.filter is not None
        self.publish(
            "growth_rate",
            {"growth_rate": self.filter.growth_rate, "timestamp": timestamp},
        )
        self.publish(
            "od_filtered",
            {"od_filtered": self.filter.od_filtered, "timestamp": timestamp},
        )
