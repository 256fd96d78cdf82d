"""Small Deferred helpers."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred


def follow(d: Deferred[Any]) -> Deferred[None]:
    """A new Deferred that fires (with None) when ``d`` does, leaving ``d``'s own result alone.

    For handing out "tell me when it's done" to any number of waiters.
    """
    waiter: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter
