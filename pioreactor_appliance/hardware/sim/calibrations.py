"""Pump calibrations that match the simulator, so a simulated unit can dose by volume.

The simulated pumps move ``PUMP_ML_PER_S`` while they run: a calibration is
the line through the origin with that slope, in the reference's YAML layout.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def install_pump_calibrations(data_dir: Path, unit: str) -> None:
    """Write the three pump calibrations into a unit's data directory and make them active,
    unless the unit already chose others. Run before the unit starts (it reads the cache once)."""
    cache_path = data_dir / "storage" / "local_cache.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    active = cache.setdefault("active_calibrations", {})
    for device in PUMP_DEVICES:
        name = calibration_name(device)
        path = data_dir / "storage" / "calibrations" / device / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pump_calibration_yaml(device, unit))
        active.setdefault(device, name)
    cache_path.write_text(json.dumps(cache, sort_keys=True))
