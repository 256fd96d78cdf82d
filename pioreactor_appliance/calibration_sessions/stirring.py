"""``dc_based``: step the stirring motor through duty cycles, read the RPM at each, fit RPM per duty cycle."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from ..errors import ApiError
from .fitting import fit_poly
from .protocol import Bench, Protocol, poly, save_calibration
from .session import Session
from .steps import Action, InputError, Step, line_review


class DcBased(Protocol):
    protocol_name = "dc_based"
    title = "Duty-cycle stirring calibration"
    description = "Map the {device} motor's duty cycle to its RPM, so stirring starts close to its target."
    requirements = (
        "Pioreactor vial with water and a stir bar",
        "Stirring job off",
        "Hall sensor (heating PCB) connected",
    )

    def precondition(self, bench: Bench) -> str | None:
        return (
            "Stirring must be off before starting."
            if bench.running("stirring")
            else None
        )

    def step(self, session: Session) -> Step:
        step_id, data = session.step_id, session.data
        if step_id == "intro":
            return Step(
                "intro",
                "info",
                self.listing()["title"],
                "Put a vial with water and a stir bar in the Pioreactor. The motor will run at "
                f"{len(data['duty_cycles'])} duty cycles and the RPM is read at each.",
            )
        if step_id == "measure":
            return Step(
                "measure",
                "action",
                "Measuring RPM",
                "The stirring motor steps through "
                + ", ".join(f"{dc:g}" for dc in data["duty_cycles"])
                + " % duty cycle.",
                action=Action("Stirring calibration", self._measure, self._measured),
            )
        if step_id == "review":
            return line_review(
                "RPM = {slope:.4g} × duty cycle + {bias:.4g}.",
                "Stirring calibration",
                "DC %",
                "RPM",
                data,
                data["dcs"],
                data["rpms"],
                (min(data["dcs"]), max(data["dcs"])),
            )
        raise KeyError(step_id)

    def start_data(self, bench: Bench) -> dict[str, Any]:
        return {
            "duty_cycles": list(bench.settings.stirring_duty_cycles),
            "pwm_hz": float(bench.hardware.stirring.frequency_hz),
        }

    async def advance(
        self, session: Session, values: dict[str, Any], bench: Bench
    ) -> str | None:
        data = session.data
        if session.step_id == "intro":
            return "measure"
        if session.step_id == "review":
            saved = await save_calibration(
                bench,
                self.target_device,
                {
                    "calibration_type": "simple_stirring",
                    "curve_data_": poly(data["coefficients"]),
                    "x": "DC %",
                    "y": "RPM",
                    "recorded_data": {"x": data["dcs"], "y": data["rpms"]},
                    "pwm_hz": data["pwm_hz"],
                    "voltage": -1.0,
                },
            )
            session.complete({"calibrations": [saved]})
            return "complete"
        raise InputError(f"Unexpected step '{session.step_id}'.")

    async def _measure(self, bench: Bench) -> dict[str, Any]:
        motor, tachometer, settings = (
            bench.hardware.stirring,
            bench.hardware.tachometer,
            bench.settings,
        )
        dcs, rpms = [], []
        try:
            for dc in settings.stirring_duty_cycles:
                await motor.set_duty(dc)
                await deferLater(bench.clock, settings.stirring_settle_seconds)
                tachometer.reset()
                await deferLater(bench.clock, settings.stirring_measure_seconds)
                dcs.append(dc)
                rpms.append(round(tachometer.rpm(), 2))
        finally:
            await motor.off()
        if sum(rpm > 0 for rpm in rpms) < 2:
            raise ApiError(
                409,
                "the hall sensor saw the motor turn at fewer than two duty cycles",
                remediation="Check the stir bar and that the heating PCB is connected, then continue to retry.",
            )
        return {"dcs": dcs, "rpms": rpms}

    def _measured(self, session: Session, result: dict[str, Any]) -> str:
        """Keep the points where the motor turned (below its stall duty it reads 0) and fit a line to them."""
        turning = [
            (dc, rpm)
            for dc, rpm in zip(result["dcs"], result["rpms"], strict=True)
            if rpm > 0
        ]
        session.data["dcs"] = [dc for dc, _ in turning]
        session.data["rpms"] = [rpm for _, rpm in turning]
        session.data["coefficients"] = fit_poly(
            session.data["dcs"], session.data["rpms"], 1
        )
        return "review"

    async def cleanup(self, bench: Bench) -> None:
        await bench.hardware.stirring.off()
