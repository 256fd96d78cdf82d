"""A job's lifecycle states and the moves between them, as existing clients read them on ``$state``."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    INIT = "init"
    READY = "ready"
    SLEEPING = "sleeping"
    DISCONNECTED = "disconnected"
    LOST = "lost"  # written by the broker's last will, never by a running job


# From each state, where a request on $state/set may take it. Disconnected is terminal.
MOVES: dict[State, frozenset[State]] = {
    State.INIT: frozenset({State.READY, State.DISCONNECTED}),
    State.READY: frozenset({State.SLEEPING, State.DISCONNECTED}),
    State.SLEEPING: frozenset({State.READY, State.DISCONNECTED}),
    State.DISCONNECTED: frozenset(),
    State.LOST: frozenset(),
}

# What a client may ask for on $state/set.
REQUESTABLE = frozenset({State.READY, State.SLEEPING, State.DISCONNECTED})


def can_move(current: State, wanted: State) -> bool:
    return wanted in MOVES[current]
