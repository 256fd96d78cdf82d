"""The vial's liquid bookkeeping per experiment: volume, efflux level, alt-media fraction, totals.

The pumps update it after every dose, ``/unit_api/bioreactor/...`` reads and
edits it, and every change is published retained on
``pioreactor/<unit>/<experiment>/bioreactor/<variable>``. Unlike the reference,
an edit is checked whole before any of it is applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, gatherResults

from ..config import Config
from ..models import Model
from .context import Bus
from .payloads import encode
from .unit_state import PersistentCache

NAMESPACE = "bioreactor"


@frozen
class Variable:
    config_key: str  # in [bioreactor]
    default: float
    maximum: str | float | None  # "capacity" for the model's vessel capacity


VARIABLES: dict[str, Variable] = {
    "current_volume_ml": Variable("initial_volume_ml", 14.0, "capacity"),
    "efflux_tube_volume_ml": Variable("efflux_tube_volume_ml", 14.0, "capacity"),
    "alt_media_fraction": Variable("initial_alt_media_fraction", 0.0, 1.0),
    "cumulative_media_added_ml": Variable(
        "initial_cumulative_media_added_ml", 0.0, None
    ),
    "cumulative_alt_media_added_ml": Variable(
        "initial_cumulative_alt_media_added_ml", 0.0, None
    ),
    "cumulative_waste_removed_ml": Variable(
        "initial_cumulative_waste_removed_ml", 0.0, None
    ),
}


DOSE_EVENTS = ("add_media", "add_alt_media", "remove_waste")


class BadValue(ValueError):
    """A bioreactor value out of range or unknown; the message names it and its bounds."""


class Bioreactor:
    def __init__(
        self, cache: PersistentCache, config: Config, model: Model, unit: str
    ) -> None:
        self._cache, self._config, self._model, self._unit = cache, config, model, unit

    @property
    def model(self) -> Model:
        return self._model

    def dose_problem(self, experiment: str, ml: float, model: Model | None = None) -> str | None:
        """Why adding ``ml`` now would be unsafe (the reference's check on a run request), or None."""
        threshold = (model or self._model).reactor_max_fill_volume_ml
        current = self.values(experiment)["current_volume_ml"]
        if current + ml >= threshold:
            return f"{current:g} ml in the vial plus {ml:g} ml would reach the model's {threshold:g} ml safety threshold"
        return None

    def maximum(self, name: str) -> float | None:
        limit = VARIABLES[name].maximum
        return self._model.reactor_capacity_ml if limit == "capacity" else limit  # type: ignore[return-value]

    def default(self, name: str) -> float:
        variable = VARIABLES[name]
        configured = self._config.get("bioreactor", variable.config_key)
        try:
            return (
                float(configured) if configured not in (None, "") else variable.default
            )
        except ValueError:
            return variable.default

    def values(self, experiment: str) -> dict[str, float]:
        stored = self._cache.get(NAMESPACE, experiment, {})
        return {name: float(stored.get(name, self.default(name))) for name in VARIABLES}

    def check(self, name: str, value: Any) -> float:
        if name not in VARIABLES:
            raise BadValue(
                f"unknown bioreactor variable {name!r}; known: {', '.join(VARIABLES)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadValue(
                f"bioreactor variable {name} must be a number, not {value!r}"
            )
        value = float(value)
        if not value >= 0:  # also refuses NaN
            raise BadValue(f"bioreactor variable {name} must be >= 0, not {value}")
        limit = self.maximum(name)
        if limit is not None and value > limit:
            raise BadValue(
                f"bioreactor variable {name} must be <= {limit:g}, not {value:g}"
            )
        return value

    def update(
        self, experiment: str, changes: Mapping[str, Any], bus: Bus
    ) -> Deferred[Any]:
        """Check every change, then store and publish them all; the Deferred fires once stored and published."""
        checked = {name: self.check(name, value) for name, value in changes.items()}
        values = self.values(experiment)
        values.update(checked)
        stored = self._cache.set(NAMESPACE, experiment, values)
        published = [
            bus.publish(
                f"pioreactor/{self._unit}/{experiment}/bioreactor/{name}",
                encode(value),
                qos=2,
                retain=True,
            )
            for name, value in checked.items()
        ]
        return gatherResults([stored, *published], consumeErrors=True)

    def after_dose(self, experiment: str, event: str, ml: float) -> dict[str, float]:
        """The values after ``ml`` moved by ``event`` (negative: a correction), as the reference's monitor applies it.

        Additions mix the alt-media fraction linearly; the waste pump cannot
        draw below the efflux tube (nor raise a lower level to it); the vessel
        holds no more than its capacity.
        """
        if event not in DOSE_EVENTS:
            raise BadValue(
                f"unknown dosing event {event!r}; one of {', '.join(DOSE_EVENTS)}"
            )
        values = self.values(experiment)
        volume, fraction = values["current_volume_ml"], values["alt_media_fraction"]
        changes: dict[str, float] = {}
        if event == "remove_waste":
            floor = min(volume, values["efflux_tube_volume_ml"])
            changes["current_volume_ml"] = max(volume - ml, floor)
            changes["cumulative_waste_removed_ml"] = max(
                values["cumulative_waste_removed_ml"] + ml, 0.0
            )
        else:
            after = max(volume + ml, 0.0)
            alt = fraction * volume + (ml if event == "add_alt_media" else 0.0)
            changes["current_volume_ml"] = min(after, self._model.reactor_capacity_ml)
            changes["alt_media_fraction"] = (
                min(max(alt / after, 0.0), 1.0) if after > 0 else fraction
            )
            total = f"cumulative_{event.removeprefix('add_')}_added_ml"
            changes[total] = max(values[total] + ml, 0.0)
        return changes

    def dose(self, experiment: str, event: str, ml: float, bus: Bus) -> Deferred[Any]:
        """Apply a dosing event to the bookkeeping, then store and publish it."""
        return self.update(experiment, self.after_dose(experiment, event, ml), bus)
