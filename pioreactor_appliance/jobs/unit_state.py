"""State the jobs of one unit share in memory, and the little of it that outlives a restart.

In the reference each job is a process and they share through local SQLite
caches; here they are objects in one process, so they share these objects. What
the reference keeps across restarts (bioreactor volumes, OD normalisation, active
calibrations) is kept in one JSON file, written atomically off the reactor thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..atomic_files import write_atomically
from ..deferreds import follow
from ..threads import OwnedThreadPool

LED_CHANNELS = ("A", "B", "C", "D")
log = Logger()


class PersistentCache:
    """Namespaced key-value pairs in ``storage/local_cache.json``: read once at start, written on change.

    Writes are coalesced: a change while a write runs schedules one more write
    of the latest state, never a stale one after a fresh one.
    """

    def __init__(self, path: Path, reactor: Any) -> None:
        self._path = path
        self._reactor = reactor
        self._data: dict[str, dict[str, Any]] = self._load()
        self._pool = OwnedThreadPool(reactor, 1, 1, "local-cache")
        self._writing: Deferred[None] | None = None
        self._dirty = False
        self.last_write_error: str | None = None  # why the last write failed; None once one succeeds

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error(
                "Ignoring the unreadable local cache {path}: {why}",
                path=self._path,
                why=e,
            )
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._data.get(namespace, {}).get(key, default)

    def items(self, namespace: str) -> dict[str, Any]:
        return dict(self._data.get(namespace, {}))

    def set(self, namespace: str, key: str, value: Any) -> Deferred[None]:
        """Change a value (``None`` removes it); the Deferred fires once it is on disk."""
        if value is None:
            self._data.get(namespace, {}).pop(key, None)
        else:
            self._data.setdefault(namespace, {})[key] = value
        return self.flush()

    def flush(self) -> Deferred[None]:
        self._dirty = True
        if self._writing is None:
            self._writing = self._write_next()
        return follow(self._writing)

    def _write_next(self) -> Deferred[None]:
        if not self._pool.started:
            self._pool.start()
        self._dirty = False
        text = json.dumps(self._data, sort_keys=True)
        d = deferToThreadPool(
            self._reactor, self._pool, _write_atomically, self._path, text
        )

        def written(result: Any) -> Any:
            self.last_write_error = result.getErrorMessage() if isinstance(result, Failure) else None
            if isinstance(result, Failure):
                log.error(
                    "Could not save the local cache {path}: {why}",
                    path=self._path,
                    why=result.getErrorMessage(),
                )
            if self._dirty:
                return self._write_next()
            self._writing = None
            return None

        return d.addBoth(written)

    def close(self) -> Deferred[None]:
        """Wait for the last write, then stop the writer thread."""
        waiting = succeed(None) if self._writing is None else self.flush()
        return waiting.addBoth(
            lambda _: self._pool.stop() if self._pool.started else None
        )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


@define
class UnitState:
    """Shared by every job on this unit."""

    cache: PersistentCache
    # LED channel -> intensity %, as last written; and channel -> the job holding it (OD reading holds IR).
    leds: dict[str, float] = field(factory=lambda: dict.fromkeys(LED_CHANNELS, 0.0))
    locked_leds: dict[str, str] = field(factory=dict)
