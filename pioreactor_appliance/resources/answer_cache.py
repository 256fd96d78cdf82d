"""Recent answers of expensive reads, shared for a few seconds.

A dashboard of 16 charts, or several browsers on one experiment, ask the
same time series every few seconds; the reference already lets each browser
reuse an answer for 5 s (``Cache-Control: max-age=5``). Sharing an answer
for ``ttl`` seconds (less than that) across clients, and letting identical
requests that arrive while it is computed wait for the same computation,
makes the cost per request independent of how many clients ask.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from attrs import define, field
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure


@define
class _Entry:
    expires: float
    answer: bytes | None = None
    waiters: list[Deferred[bytes]] = field(factory=list)


@define
class AnswerCache:
    """At most ``max_entries`` answers, each reused until ``ttl`` seconds after its computation began."""

    clock: IReactorTime
    ttl: float
    max_entries: int = 64
    _entries: OrderedDict[Hashable, _Entry] = field(factory=OrderedDict, init=False)

    def get(self, key: Hashable, compute: Callable[[], Deferred[bytes]]) -> Deferred[bytes]:
        now = self.clock.seconds()
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            del self._entries[key]
            entry = None
        waiter: Deferred[bytes] = Deferred()
        if entry is not None:
            self._entries.move_to_end(key)
            if entry.answer is not None:
                waiter.callback(entry.answer)
            else:
                entry.waiters.append(waiter)
            return waiter
        entry = _Entry(now + self.ttl, waiters=[waiter])
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        maybeDeferred(compute).addCallbacks(lambda answer: self._done(entry, answer), lambda failure: self._failed(key, entry, failure))
        return waiter

    def _done(self, entry: _Entry, answer: bytes) -> None:
        entry.answer = answer
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            waiter.callback(answer)

    def _failed(self, key: Hashable, entry: _Entry, failure: Failure) -> None:
        """A failure is not kept: the next request tries again."""
        if self._entries.get(key) is entry:
            del self._entries[key]
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            waiter.errback(failure)
