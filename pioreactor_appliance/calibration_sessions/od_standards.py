"""``standards``: read the photodiodes on vials of known OD600, fit voltage per OD600 for each angle."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from ..config import ConfigError
from ..errors import ApiError
from ..jobs.od_reading import AUTO_START, ODConfig, trimmed_mean
from ..jobs.unit_state import LED_CHANNELS
from .fitting import FitError, fit_poly
from .protocol import Bench, Protocol, poly, save_calibration
from .session import Session
from .steps import Action, Field, InputError, Step, chart

MIN_STANDARDS = 2
# The angles the reference calibrates (and ``od`` for all of them).
OD_DEVICE_ANGLES = ("45", "90", "135")


def od_devices(config: Any) -> list[str]:
    """``od<angle>`` per configured angle, and ``od`` when there are two or more; none if the OD config is unusable."""
    try:
        angles = sorted(
            set(ODConfig.from_config(config, {}).signals.values())
            & set(OD_DEVICE_ANGLES),
            key=int,
        )
    except ConfigError:
        return []
    return [f"od{angle}" for angle in angles] + (["od"] if len(angles) >= 2 else [])


def degree_for(count: int) -> int:
    """A line through few standards; a gentle curve once there are enough points to justify one."""
    return 1 if count <= 3 else 2


class Standards(Protocol):
    protocol_name = "standards"
    title = "OD standards calibration"
    description = (
        "Calibrate the {device} photodiode readings against vials of known OD600."
    )
    requirements = (
        "Two or more vials of known OD600 (one can be clear media, OD600 0)",
        "OD reading off",
        "A spectrophotometer reading of each standard",
    )

    def _signals(self, bench: Bench) -> dict[str, str]:
        """Photodiode channel -> angle, for the channels this device covers."""
        signals = ODConfig.from_config(bench.config, {}).signals
        return {
            c: a for c, a in signals.items() if self.target_device in ("od", f"od{a}")
        }

    def precondition(self, bench: Bench) -> str | None:
        if bench.running("od_reading"):
            return "OD reading must be off before starting."
        if bench.hardware.photodiodes is None:
            return "This unit's photodiode ADC is not supported, so it cannot measure standards."
        try:
            if not self._signals(bench):
                return f"No photodiode channel is configured for {self.target_device}."
        except ConfigError as e:
            return f"The OD configuration is unusable: {e}"
        return None

    def step(self, session: Session) -> Step:
        step_id, data = session.step_id, session.data
        count = len(data["standards"])
        if step_id == "intro":
            return Step(
                "intro",
                "info",
                self.listing()["title"],
                f"Measure {MIN_STANDARDS} or more vials of known OD600, one at a time. For each, enter its OD600, "
                "place it in the Pioreactor, and the photodiodes are read with the IR LED on.",
            )
        if step_id == "standard":
            return Step(
                "standard",
                "form",
                f"Standard {count + 1}",
                "Place the standard vial in the Pioreactor, then enter its OD600.",
                (
                    Field(
                        "od600",
                        "OD600 of this standard",
                        "float",
                        minimum=0,
                        min_error_msg="OD600 cannot be negative.",
                    ),
                ),
            )
        if step_id == "measure":
            return Step(
                "measure",
                "action",
                f"Reading standard {count + 1}",
                f"Reading the photodiodes of the vial with OD600 {data['od600']:g}.",
                action=Action("OD measurement", self._measure, self._measured),
            )
        if step_id == "another":
            latest = data["standards"][-1]
            volts = ", ".join(
                f"channel {c}: {v:.4g} V" for c, v in latest["voltages"].items()
            )
            return Step(
                "another",
                "form",
                "Another standard?",
                f"Standard {count} (OD600 {latest['od600']:g}) read {volts}.",
                (
                    Field(
                        "another",
                        "Measure another standard?",
                        "bool",
                        help_text=f"At least {MIN_STANDARDS} are needed.",
                    ),
                ),
            )
        if step_id == "review":
            series: list[tuple[str, str, list[tuple[float, float]]]] = []
            for channel, fit in data["fits"].items():
                series.append(
                    (
                        f"pd{channel}",
                        f"Channel {channel} ({fit['angle']}°)",
                        list(zip(fit["od600s"], fit["voltages"], strict=True)),
                    )
                )
            return Step(
                "review",
                "result",
                "Review the fit",
                "Continue to save one calibration per angle and make each active.",
                metadata={"chart": chart("OD standards", "OD600", "Voltage", series)},
            )
        raise KeyError(step_id)

    def start_data(self, bench: Bench) -> dict[str, Any]:
        return {"standards": []}

    async def advance(
        self, session: Session, values: dict[str, Any], bench: Bench
    ) -> str | None:
        step_id, data = session.step_id, session.data
        if step_id == "intro":
            return "standard"
        if step_id == "standard":
            data["od600"] = values["od600"]
            return "measure"
        if step_id == "another":
            if values["another"]:
                return "standard"
            if len(data["standards"]) < MIN_STANDARDS:
                raise InputError(
                    f"At least {MIN_STANDARDS} standards are needed; measure another."
                )
            data["fits"] = self._fits(data["standards"], self._signals(bench))
            return "review"
        if step_id == "review":
            saved = []
            for channel, fit in data["fits"].items():
                saved.append(
                    await save_calibration(
                        bench,
                        f"od{fit['angle']}",
                        {
                            "calibration_type": "od600",
                            "curve_data_": poly(fit["coefficients"]),
                            "x": "OD600",
                            "y": "Voltage",
                            "recorded_data": {"x": fit["od600s"], "y": fit["voltages"]},
                            "ir_led_intensity": data["ir_led_intensity"],
                            "angle": fit["angle"],
                            "pd_channel": channel,
                        },
                    )
                )
            session.complete({"calibrations": saved})
            return "complete"
        return None

    def _fits(
        self, standards: list[dict[str, Any]], signals: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        fits = {}
        for channel, angle in signals.items():
            od600s = [s["od600"] for s in standards]
            voltages = [s["voltages"][channel] for s in standards]
            try:
                coefficients = fit_poly(od600s, voltages, degree_for(len(set(od600s))))
            except FitError as e:
                raise InputError(
                    f"Cannot fit channel {channel}: {e}; measure standards of different OD600."
                ) from None
            fits[channel] = {
                "angle": angle,
                "od600s": od600s,
                "voltages": voltages,
                "coefficients": coefficients,
            }
        return fits

    async def _measure(self, bench: Bench) -> dict[str, Any]:
        od = ODConfig.from_config(bench.config, {})
        channels = sorted(self._signals(bench))
        photodiodes = bench.hardware.photodiodes
        if photodiodes is None:
            raise ApiError(409, "this unit's photodiode ADC is not supported")
        intensity = (
            od.ir_led_intensity
            if isinstance(od.ir_led_intensity, float)
            else AUTO_START
        )
        await photodiodes.prepare()
        await self._ir(bench, od.ir_channel, intensity)
        try:
            await deferLater(bench.clock, bench.settings.od_settle_seconds)
            samples = await photodiodes.burst(
                [int(c) for c in channels], od.rounds, od.burst_seconds
            )
        finally:
            await self._ir(bench, od.ir_channel, 0.0)
        return {
            "voltages": {c: round(trimmed_mean(samples[int(c)]), 6) for c in channels},
            "ir_led_intensity": intensity,
        }

    def _measured(self, session: Session, result: dict[str, Any]) -> str:
        session.data["standards"].append(
            {"od600": session.data.pop("od600"), "voltages": result["voltages"]}
        )
        session.data["ir_led_intensity"] = result["ir_led_intensity"]
        return "another"

    async def _ir(self, bench: Bench, channel: str, percent: float) -> None:
        await bench.hardware.leds.set_led(LED_CHANNELS.index(channel), percent)
        bench.jobs.unit_state.leds[channel] = percent

    async def cleanup(self, bench: Bench) -> None:
        try:
            channel = ODConfig.from_config(bench.config, {}).ir_channel
        except ConfigError:
            return
        await self._ir(bench, channel, 0.0)
