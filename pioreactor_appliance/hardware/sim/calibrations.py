"""Pump calibrations that match the simulator, so a simulated unit can dose by volume.

The simulated pumps move ``PUMP_ML_PER_S`` while they run: a calibration is
the line through the origin with that slope, in the reference's YAML layout.
"""

from __future__ import annotations

from .model import PUMP_ML_PER_S

PUMP_DEVICES = ("media_pump", "alt_media_pump", "waste_pump")


def calibration_name(device: str) -> str:
    return f"simulated_{device}"


def pump_calibration_yaml(device: str, unit: str) -> str:
    seconds = [1.0, 5.0, 10.0, 20.0]
    volumes = [PUMP_ML_PER_S * s for s in seconds]
    return (
        "calibration_type: simple_peristaltic_pump\n"
        f"calibration_name: {calibration_name(device)}\n"
        f"calibrated_on_pioreactor_unit: {unit}\n"
        "created_at: 2026-01-01 00:00:00+00:00\n"
        f"curve_data_: {{type: poly, coefficients: [{PUMP_ML_PER_S}, 0.0]}}\n"
        "x: Duration\n"
        "y: Volume\n"
        f"recorded_data: {{x: {seconds}, y: {volumes}}}\n"
        "hz: 250.0\n"
        "dc: 100.0\n"
        "voltage: -1.0\n"
    )
