"""The leader's short memory of what units answered: calibrations, estimators, protocols, plugins, merged config.

A dashboard asks every worker for these lists each time a page opens, and a
slow Pi makes the page wait; the reference keeps each unit's successful answer
for 10 s. Only successes are kept (a unit that was off is asked again at once),
and a write through the leader forgets what it changes. A read that was already
on its way when a write forgot its unit does not store its (older) answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

Envelopes = dict[str, dict[str, Any]]

CALIBRATIONS = "calibrations"
ACTIVE_CALIBRATIONS = "active_calibrations"
CALIBRATION_PROTOCOLS = "calibration_protocols"
ESTIMATORS = "estimators"
ACTIVE_ESTIMATORS = "active_estimators"
PLUGINS = "plugins"
MERGED_CONFIG = "merged_config"


@define
class _Entry:
    expires: float
    envelope: dict[str, Any]


@define
class LeaderCache:
    """Per (unit, kind), the last successful envelope for ``ttl`` seconds of ``clock``."""

    clock: IReactorTime
    ttl: float
    _entries: dict[tuple[str, str], _Entry] = field(factory=dict, init=False)
    _generations: dict[str, int] = field(factory=dict, init=False)

    def get(self, unit: str, kind: str) -> dict[str, Any] | None:
        entry = self._entries.get((unit, kind))
        if entry is None:
            return None
        if entry.expires <= self.clock.seconds():
            del self._entries[(unit, kind)]
            return None
        return entry.envelope

    def invalidate(self, units: Iterable[str], kinds: Iterable[str]) -> None:
        """Forget what ``units`` answered for ``kinds``; reads of those units already under way store nothing."""
        kinds = tuple(kinds)
        for unit in units:
            self._generations[unit] = self._generations.get(unit, 0) + 1
            for kind in kinds:
                self._entries.pop((unit, kind), None)

    async def read(
        self, kind: str, units: Sequence[str], fetch: Callable[[list[str]], Deferred[Envelopes]]
    ) -> Envelopes:
        """Each unit's envelope, sorted by unit: kept ones as they are, the others from ``fetch(missing)``."""
        found: Envelopes = {}
        missing: list[str] = []
        for unit in units:
            kept = self.get(unit, kind)
            if kept is None:
                missing.append(unit)
            else:
                found[unit] = kept
        if missing:
            started = {unit: self._generations.get(unit, 0) for unit in missing}
            fetched = await fetch(missing)
            self._prune()
            expires = self.clock.seconds() + self.ttl
            for unit, envelope in fetched.items():
                if envelope.get("ok") and started.get(unit) == self._generations.get(unit, 0):
                    self._entries[(unit, kind)] = _Entry(expires, envelope)
            found.update(fetched)
        return dict(sorted(found.items()))

    def _prune(self) -> None:
        """Drop expired entries, so units that left the cluster do not stay in memory."""
        now = self.clock.seconds()
        for key in [key for key, entry in self._entries.items() if entry.expires <= now]:
            del self._entries[key]
