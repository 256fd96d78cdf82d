"""The built-in Pioreactor hardware models: vessel sizes and heater safety limits per model version.

Figures come from Pioreactor's published specifications as best we know them.
Values marked ``# unsure`` are estimates that should be checked against the
vendor's model registry before they gate anything safety-related.
"""

from __future__ import annotations

from typing import Any

from attrs import asdict, frozen


@frozen
class Model:
    name: str
    version: str
    display_name: str
    reactor_capacity_ml: float
    reactor_diameter_mm: float
    reactor_max_fill_volume_ml: float
    max_temp_to_reduce_heating: float
    max_temp_to_disable_heating: float
    max_temp_to_shutdown: float
    is_legacy: bool = False
    is_contrib: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _pioreactor_20ml(version: str, *, legacy: bool = False) -> Model:
    return Model(
        name="pioreactor_20ml",
        version=version,
        display_name=f"Pioreactor 20ml, v{version}",
        reactor_capacity_ml=20.0,
        reactor_diameter_mm=27.0,  # unsure
        reactor_max_fill_volume_ml=18.0,
        # The first 20 ml vessel's heating PCB runs hotter for the same vial temperature.
        max_temp_to_reduce_heating=63.0 if version == "1.0" else 78.0,
        max_temp_to_disable_heating=65.0 if version == "1.0" else 80.0,
        max_temp_to_shutdown=66.0 if version == "1.0" else 85.0,
        is_legacy=legacy,
    )


def _pioreactor_40ml(version: str) -> Model:
    return Model(
        name="pioreactor_40ml",
        version=version,
        display_name=f"Pioreactor 40ml, v{version}",
        reactor_capacity_ml=40.0,
        reactor_diameter_mm=27.0,  # unsure
        reactor_max_fill_volume_ml=36.0,
        max_temp_to_reduce_heating=78.0,
        max_temp_to_disable_heating=80.0,
        max_temp_to_shutdown=85.0,
    )


def _pioreactor_xr(capacity_ml: int) -> Model:
    # unsure: the XR model names, fill volumes and heater limits are estimates.
    return Model(
        name=f"pioreactor_{capacity_ml}ml_XR",
        version="1.5",
        display_name=f"Pioreactor {capacity_ml}ml XR, v1.5",
        reactor_capacity_ml=float(capacity_ml),
        reactor_diameter_mm=27.0,
        reactor_max_fill_volume_ml=capacity_ml * 0.9,
        max_temp_to_reduce_heating=78.0,
        max_temp_to_disable_heating=80.0,
        max_temp_to_shutdown=85.0,
    )


BUILT_IN_MODELS: tuple[Model, ...] = (
    _pioreactor_20ml("1.0", legacy=True),
    _pioreactor_20ml("1.1"),
    _pioreactor_20ml("1.5"),
    _pioreactor_40ml("1.0"),  # unsure: whether a 40ml v1.0 kit ever shipped
    _pioreactor_40ml("1.5"),
    _pioreactor_xr(20),
    _pioreactor_xr(40),
)


def find_model(name: str, version: str) -> Model | None:
    """The built-in model of that name and version, if there is one."""
    return next((m for m in BUILT_IN_MODELS if (m.name, m.version) == (name, version)), None)
