"""The growth filter alone, on synthetic cultures: convergence, dilutions, outliers, warm-up statistics."""

from __future__ import annotations

import math
import random

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.growth_filter import (
    MAX_RATE,
    GrowthFilter,
    normalisation_factors,
    robust_std,
    transition,
)

RATE = math.log(2) / 2  # per hour: doubling every 2 h
DT = 30.0  # seconds between readings


def culture(hours: float, rate: float = RATE, start: float = 0.05) -> float:
    return start * math.exp(rate * hours)


def warm_filter(
    rng: random.Random, noise: float = 0.005, sensors: int = 1
) -> tuple[GrowthFilter, float]:
    """A filter warmed up on ten noisy readings; returns it and the time (s) of the last one."""
    times = [i * DT for i in range(10)]
    factor = culture(0)
    observations = [
        [culture(t / 3600) / factor * (1 + rng.gauss(0, noise)) for t in times]
        for _ in range(sensors)
    ]
    return GrowthFilter.from_warmup(times, observations, outlier_threshold=5.0), times[
        -1
    ]


class GrowthFilterTests(TestCase):
    def test_it_finds_the_growth_rate_of_a_noisy_exponential_culture(self) -> None:
        rng = random.Random(3)
        f, t = warm_filter(rng)
        self.assertEqual(f.growth_rate, 0.0, "it starts knowing nothing of the rate")
        last_five_median = culture(7 * DT / 3600) / culture(0)
        self.assertLess(
            abs(f.od_filtered / last_five_median - 1),
            0.01,
            "it starts at the last warm-up readings",
        )
        while t < 3 * 3600:
            t += DT
            f.update(
                [culture(t / 3600) / culture(0) * (1 + rng.gauss(0, 0.005))], DT / 3600
            )
        self.assertLess(abs(f.growth_rate - RATE) / RATE, 0.05)
        self.assertLess(
            abs(f.od_filtered - math.exp(RATE * t / 3600)) / f.od_filtered, 0.02
        )

    def test_a_dilution_moves_the_od_at_once_and_barely_the_rate(self) -> None:
        rng = random.Random(4)
        f, t = warm_filter(rng)
        scale = 1.0  # the dilutions so far
        dilutions_at = {2 * 3600.0, 2.5 * 3600.0}
        after_dilution = 0
        rates_after = []
        while t < 3.5 * 3600:
            t += DT
            if t in dilutions_at:
                scale *= 0.5
                after_dilution = 2
            f.update(
                [scale * culture(t / 3600) / culture(0) * (1 + rng.gauss(0, 0.005))],
                DT / 3600,
                recent_dilution=after_dilution > 0,
            )
            if after_dilution:
                after_dilution -= 1
                rates_after.append(f.growth_rate)
            if after_dilution == 0 and t - DT in dilutions_at:
                expected = scale * culture(t / 3600) / culture(0)
                self.assertLess(
                    abs(f.od_filtered - expected) / expected,
                    0.05,
                    "the OD follows the dilution within two readings",
                )
        self.assertGreater(
            min(rates_after), 0.2, "a dilution is not read as the culture dying"
        )
        self.assertLess(abs(f.growth_rate - RATE) / RATE, 0.1)

    def test_a_dilution_the_filter_is_not_told_of_is_an_outlier_at_first(self) -> None:
        rng = random.Random(5)
        f, t = warm_filter(rng)
        while t < 2 * 3600:
            t += DT
            f.update([culture(t / 3600) / culture(0)], DT / 3600)
        before = f.od_filtered
        t += DT
        f.update([0.5 * culture(t / 3600) / culture(0)], DT / 3600)
        self.assertGreater(
            f.od_filtered, 0.9 * before, "one wild reading is down-weighted"
        )
        self.assertGreater(f.growth_rate, 0.25, "nor does it drag the rate down")

    def test_the_rate_is_clipped_and_sensors_are_fused(self) -> None:
        rng = random.Random(6)
        f, t = warm_filter(rng, sensors=2)
        measured, variance = f.fuse([1.0, math.e])
        self.assertAlmostEqual(
            measured, 0.5, msg="equally trusted sensors: the mean of their logs"
        )
        self.assertAlmostEqual(
            variance, f.base_variance / 2, msg="two sensors halve the variance"
        )
        for _ in range(200):
            t += DT
            f.update([50.0, 50.0], DT / 3600)  # an impossible jump, held
        self.assertLessEqual(f.growth_rate, MAX_RATE)
        with self.assertRaises(ValueError):
            f.update([1.0], DT / 3600)

    def test_warm_up_statistics_and_bad_input(self) -> None:
        self.assertAlmostEqual(robust_std([1, 1, 1, 1]), 0.0)
        self.assertAlmostEqual(robust_std([1, 2, 3, 4, 100]), 1.4826)
        self.assertEqual(normalisation_factors({"2": [0.1, 0.3, 0.2]}), {"2": 0.2})
        with self.assertRaises(ValueError):
            normalisation_factors({"2": [0.0, 0.0, 0.1]})
        with self.assertRaises(ValueError):
            GrowthFilter.from_warmup([0.0, 5.0], [[1.0, 1.0]], outlier_threshold=2.0)
        with self.assertRaises(ValueError):
            GrowthFilter.from_warmup([0.0], [[1.0]], outlier_threshold=5.0)
        # steady growth during the warm-up is not noise: the line is fitted out
        times = [i * 5.0 for i in range(10)]
        growing = GrowthFilter.from_warmup(
            times, [[math.exp(0.01 * i) for i in range(10)]], 5.0
        )
        self.assertAlmostEqual(growing.sensor_variances[0], 5e-3**2)
        self.assertEqual(
            transition(2.0), [[1.0, 2.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.995]]
        )
