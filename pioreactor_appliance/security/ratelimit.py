"""A token bucket per client address, on an injected clock."""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime


class RateLimiter:
    """``per_minute`` requests a minute on average, up to ``burst`` at once.

    The table of clients is bounded; the least recently seen is forgotten first,
    which at worst gives a forgotten client a fresh burst.
    """

    def __init__(self, clock: IReactorTime, per_minute: int, burst: int, max_clients: int = 4096) -> None:
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = float(max(burst, 1))
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float | None:
        """Spend one token: None if allowed, else the seconds until the next token."""
        now = self._clock.seconds()
        tokens = self._tokens(client, now)
        if tokens >= 1:
            self._remember(client, tokens - 1, now)
            return None
        self._remember(client, tokens, now)
        return self._until_next(tokens)

    def wait(self, client: str) -> float | None:
        """Like ``take`` without spending: None if a token is there."""
        tokens = self._tokens(client, self._clock.seconds())
        return None if tokens >= 1 else self._until_next(tokens)

    def _tokens(self, client: str, now: float) -> float:
        tokens, then = self._buckets.get(client, (self._burst, now))
        return min(self._burst, tokens + (now - then) * self._rate)

    def _until_next(self, tokens: float) -> float:
        return (1 - tokens) / self._rate if self._rate > 0 else 60.0

    def _remember(self, client: str, tokens: float, now: float) -> None:
        self._buckets.pop(client, None)
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
