"""The token bucket: a burst, then the rate, per client."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.security.ratelimit import RateLimiter


class RateLimiterTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, per_minute=6, burst=3)
        self.assertEqual([limiter.take("a") for _ in range(3)], [None, None, None])
        self.assertAlmostEqual(limiter.take("a"), 10.0)
        self.assertIsNone(limiter.take("b"), "another client has its own bucket")
        clock.advance(10)
        self.assertIsNone(limiter.take("a"))
        self.assertIsNotNone(limiter.take("a"))

    def test_wait_does_not_spend(self) -> None:
        limiter = RateLimiter(Clock(), per_minute=60, burst=1)
        self.assertIsNone(limiter.wait("a"))
        self.assertIsNone(limiter.wait("a"))
        self.assertIsNone(limiter.take("a"))
        self.assertIsNotNone(limiter.wait("a"))

    def test_the_table_of_clients_is_bounded(self) -> None:
        limiter = RateLimiter(Clock(), per_minute=1, burst=1, max_clients=2)
        for client in ["a", "b", "c"]:
            limiter.take(client)
        self.assertEqual(len(limiter._buckets), 2)
        self.assertIsNone(limiter.take("a"), "the oldest client was forgotten")
