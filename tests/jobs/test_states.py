"""The moves a job's $state may make."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.jobs.states import REQUESTABLE, State, can_move


class StateTests(SynchronousTestCase):
    def test_moves(self) -> None:
        self.assertTrue(can_move(State.INIT, State.READY))
        self.assertTrue(can_move(State.READY, State.SLEEPING))
        self.assertTrue(can_move(State.SLEEPING, State.READY))
        self.assertTrue(can_move(State.SLEEPING, State.DISCONNECTED))
        self.assertFalse(
            can_move(State.DISCONNECTED, State.READY), "disconnected is terminal"
        )
        self.assertFalse(
            can_move(State.READY, State.LOST), "only the broker's will says lost"
        )
        self.assertNotIn(State.LOST, REQUESTABLE)
        self.assertNotIn(State.INIT, REQUESTABLE)
