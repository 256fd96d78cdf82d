"""``duration_based``: run a pump for a few durations, weigh what each moved, fit ml per second."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from ..errors import ApiError
from ..hardware.outputs import OutputRefused
from .fitting import FitError, fit_poly
from .protocol import Bench, Protocol, poly, save_calibration
from .session import Session
from .steps import Action, Field, InputError, Step, line_review

PUMP_DEVICES = {
    "media_pump": "media",
    "alt_media_pump": "alt_media",
    "waste_pump": "waste",
}


class DurationBased(Protocol):
    protocol_name = "duration_based"
    title = "Duration-based pump calibration"
    description = "Build a duration-to-volume curve for the {device} by running it for set times and measuring what it moved."
    requirements = (
        "DC Peristaltic pump assigned to {device}",
        "Pioreactor vial",
        "Container of clean water",
        "Measuring container or scale",
    )

    @property
    def pump_name(self) -> str:
        return PUMP_DEVICES[self.target_device]

    def step(self, session: Session) -> Step:
        step_id, data = session.step_id, session.data
        if step_id == "intro":
            return Step(
                "intro",
                "info",
                self.listing()["title"],
                f"The {self.pump_name.replace('_', ' ')} pump will run {len(data['durations'])} times; after each run, "
                "enter the volume it moved (weigh it: 1 g of water is 1 ml).",
            )
        if step_id == "pwm_settings":
            return Step(
                "pwm_settings",
                "form",
                "Pump settings",
                "The PWM the pump runs at while calibrating; dosing uses the calibration at these settings.",
                (
                    Field(
                        "hz",
                        "PWM frequency (Hz)",
                        "float",
                        default=data["hz"],
                        minimum=0.1,
                        maximum=10000,
                    ),
                    Field(
                        "dc",
                        "Duty cycle (%)",
                        "float",
                        default=100.0,
                        minimum=1,
                        maximum=100,
                    ),
                ),
            )
        if step_id == "tubing":
            return Step(
                "tubing",
                "confirm",
                "Prime the tubing",
                "Put the pump's inlet tubing in the water and its outlet in the measuring container, and make sure "
                "the tubing is full of water (no air) before the first run.",
            )
        if step_id.startswith("run_"):
            run = int(step_id[4:])
            seconds = data["durations"][run - 1]
            return Step(
                step_id,
                "action",
                f"Run {run} of {len(data['durations'])}",
                f"The pump runs for {seconds:g} s.",
                action=Action(
                    "Pump run",
                    lambda bench: self._run(bench, seconds, data["dc"]),
                    lambda session, result: f"volume_{run}",
                ),
            )
        if step_id.startswith("volume_"):
            run = int(step_id[7:])
            return Step(
                step_id,
                "form",
                f"Volume of run {run}",
                f"Enter the volume the pump moved in {data['durations'][run - 1]:g} s, then empty the container.",
                (
                    Field(
                        "volume_ml",
                        "Volume (ml)",
                        "float",
                        minimum=0,
                        min_error_msg="The volume cannot be negative.",
                    ),
                ),
            )
        if step_id == "review":
            return line_review(
                "Volume = {slope:.4g} ml/s × duration + {bias:.4g} ml.",
                "Pump calibration",
                "Duration (s)",
                "Volume (ml)",
                data,
                data["durations"],
                data["volumes"],
                (0.0, max(data["durations"])),
            )
        raise KeyError(step_id)

    def start_data(self, bench: Bench) -> dict[str, Any]:
        return {
            "durations": list(bench.settings.pump_durations),
            "hz": float(bench.hardware.pumps[self.pump_name].frequency_hz),
        }

    async def advance(
        self, session: Session, values: dict[str, Any], bench: Bench
    ) -> str | None:
        step_id, data = session.step_id, session.data
        if step_id == "intro":
            return "pwm_settings"
        if step_id == "pwm_settings":
            if values["hz"] != data["hz"]:
                raise InputError(
                    f"Invalid 'hz': this unit's pumps run at {data['hz']:g} Hz."
                )
            data["dc"] = values["dc"]
            return "tubing"
        if step_id == "tubing":
            data["volumes"] = []
            return "run_1"
        if step_id.startswith("volume_"):
            data["volumes"].append(values["volume_ml"])
            if len(data["volumes"]) < len(data["durations"]):
                return f"run_{len(data['volumes']) + 1}"
            try:
                data["coefficients"] = fit_poly(data["durations"], data["volumes"], 1)
            except FitError as e:
                raise InputError(f"Cannot fit the volumes: {e}.") from None
            return "review"
        if step_id == "review":
            slope, _ = data["coefficients"]
            if slope <= 0:
                raise InputError(
                    "The volumes do not rise with duration; abort, check the pump and tubing, and start again."
                )
            saved = await save_calibration(
                bench,
                self.target_device,
                {
                    "calibration_type": "simple_peristaltic_pump",
                    "curve_data_": poly(data["coefficients"]),
                    "x": "Duration",
                    "y": "Volume",
                    "recorded_data": {"x": data["durations"], "y": data["volumes"]},
                    "hz": data["hz"],
                    "dc": data["dc"],
                    "voltage": -1.0,
                },
            )
            session.complete({"calibrations": [saved]})
            return "complete"
        return None

    async def _run(self, bench: Bench, seconds: float, dc: float) -> dict[str, Any]:
        pump = bench.hardware.pumps[self.pump_name]
        try:
            started = pump.run_for(seconds, dc)
        except OutputRefused as e:  # another run of this pump: leave it be
            raise ApiError(
                409,
                str(e),
                remediation="Wait for the pump to stop, then continue to retry.",
            ) from None
        try:
            await started
            await deferLater(bench.clock, seconds)
        finally:
            await pump.stop()
        return {"duration_s": seconds}

    async def cleanup(self, bench: Bench) -> None:
        await bench.hardware.pumps[self.pump_name].stop()
