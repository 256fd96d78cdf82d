"""The growth-rate filter: a Kalman filter on log normalised OD with a growth rate and its drift.

State ``[log nOD, r (per hour), r_drift]``; each OD message is one update. The
sensors (one per photodiode channel) are fused into one log-OD measurement by
inverse-variance weighting, so the filter itself stays three-dimensional and
scalar-observed. Pure Python: the state is 3x3, and numpy is not worth its
memory on the unit for that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from statistics import median

from attrs import define

Matrix = list[list[float]]

MIN_OBSERVATION = 1e-9  # a zero OD has no logarithm: read it as this
MIN_SENSOR_STD = 5e-3  # floor of a sensor's log-noise std from the warm-up
MIN_LOG_VARIANCE = 2e-5  # floor of any measurement's log variance
NOMINAL_DT_SECONDS = 5.0  # the process noise below is per 5 s reading
PROCESS_NOISE = (1e-8, 5e-8, 5e-6)
INITIAL_RATE_STD, INITIAL_DRIFT_STD = 0.03, 0.05
MIN_INITIAL_LOG_STD = 0.05
DRIFT_DECAY = 0.995
DILUTION_LOG_OD_VARIANCE, DILUTION_RATE_VARIANCE = 0.05, 1e-4
MIN_RATE, MAX_RATE = -1.0, 3.0
ADAPT_WEIGHT = 0.02
ADAPT_CAP = (
    16.0  # an innovation adapts the noise by at most 16 of its expected variances
)
MAD_TO_STD = 1.4826


def robust_std(values: Sequence[float]) -> float:
    """1.4826 x the median absolute deviation: a standard deviation that outliers barely move."""
    if not values:
        return 0.0
    centre = median(values)
    return MAD_TO_STD * median(abs(v - centre) for v in values)


def _residuals_of_line(ts: Sequence[float], ys: Sequence[float]) -> list[float]:
    """What is left of ``ys`` after a least-squares straight line in ``ts``."""
    n = len(ts)
    mean_t, mean_y = sum(ts) / n, sum(ys) / n
    spread = sum((t - mean_t) ** 2 for t in ts)
    slope = (
        sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys)) / spread
        if spread
        else 0.0
    )
    return [y - (mean_y + slope * (t - mean_t)) for t, y in zip(ts, ys)]


def _log(value: float) -> float:
    return math.log(max(value, MIN_OBSERVATION))


def _mul(a: Matrix, b: Matrix) -> Matrix:
    return [
        [sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
        for i in range(len(a))
    ]


def _transpose(a: Matrix) -> Matrix:
    return [list(row) for row in zip(*a)]


def _diagonal(values: Sequence[float]) -> Matrix:
    return [
        [v if i == j else 0.0 for j in range(len(values))] for i, v in enumerate(values)
    ]


def transition(dt_hours: float) -> Matrix:
    """log OD grows by r and r by its drift over ``dt``; the drift slowly fades."""
    return [
        [1.0, dt_hours, dt_hours * dt_hours / 2],
        [0.0, 1.0, dt_hours],
        [0.0, 0.0, DRIFT_DECAY],
    ]


@define
class GrowthFilter:
    """The running filter; build it from a warm-up with ``from_warmup``."""

    state: list[float]
    covariance: Matrix
    process_noise: Matrix
    sensor_variances: list[float]  # per sensor, of the normalised OD (not its log)
    outlier_threshold: float
    base_variance: float  # the least log variance any fused measurement is given
    adaptive_variance: float  # the log-measurement noise as the innovations show it

    @classmethod
    def from_warmup(
        cls,
        times_s: Sequence[float],
        observations: Sequence[Sequence[float]],
        outlier_threshold: float,
    ) -> GrowthFilter:
        """Start from warm-up readings: ``observations[i]`` is sensor i's normalised OD at ``times_s``.

        Each sensor's noise is the robust spread of its log readings about a
        straight line (growth during the warm-up is not noise); the start is the
        median of the last five readings.
        """
        if len(times_s) < 2 or any(len(obs) != len(times_s) for obs in observations):
            raise ValueError("the warm-up needs two or more readings from every sensor")
        if not observations:
            raise ValueError("the warm-up needs at least one sensor")
        if outlier_threshold <= 2:
            raise ValueError(
                f"the outlier threshold must be above 2, not {outlier_threshold}"
            )
        hours = [(t - times_s[0]) / 3600 for t in times_s]
        logs = [[_log(v) for v in obs] for obs in observations]
        variances = [
            max(robust_std(_residuals_of_line(hours, sensor)), MIN_SENSOR_STD) ** 2
            for sensor in logs
        ]
        mean_variance = sum(variances) / len(variances)
        start = sum(_log(median(obs[-5:])) for obs in observations) / len(observations)
        log_std = max(
            MIN_INITIAL_LOG_STD,
            2 * max(robust_std(sensor) for sensor in logs),
            math.sqrt(mean_variance),
        )
        dt_nominal = median(b - a for a, b in pairwise(times_s))
        scale = max(dt_nominal / NOMINAL_DT_SECONDS, 0.25)
        base = max(MIN_LOG_VARIANCE, 3 * mean_variance / math.exp(start) ** 2)
        return cls(
            state=[start, 0.0, 0.0],
            covariance=_diagonal(
                [log_std**2, INITIAL_RATE_STD**2, INITIAL_DRIFT_STD**2]
            ),
            process_noise=_diagonal([q * scale for q in PROCESS_NOISE]),
            sensor_variances=variances,
            outlier_threshold=outlier_threshold,
            base_variance=base,
            adaptive_variance=base,
        )

    @property
    def growth_rate(self) -> float:
        return self.state[1]

    @property
    def od_filtered(self) -> float:
        return math.exp(self.state[0])

    def fuse(self, observations: Sequence[float]) -> tuple[float, float]:
        """One log-OD measurement and its variance from every sensor, weighted by inverse variance."""
        if len(observations) != len(self.sensor_variances):
            raise ValueError(
                f"expected {len(self.sensor_variances)} readings, got {len(observations)}"
            )
        weights, weighted = 0.0, 0.0
        for value, variance in zip(observations, self.sensor_variances):
            od = max(value, MIN_OBSERVATION)
            log_variance = max(variance / od**2, self.base_variance)
            weights += 1 / log_variance
            weighted += math.log(od) / log_variance
        return weighted / weights, 1 / weights

    def update(
        self,
        observations: Sequence[float],
        dt_hours: float,
        recent_dilution: bool = False,
    ) -> None:
        """Predict ``dt_hours`` ahead, then correct with the readings.

        Just after a dilution the OD jumps and the rate may change, so the
        process noise is raised; an innovation beyond the outlier threshold has
        its measurement variance scaled up instead of moving the state far.
        """
        measured, measured_variance = self.fuse(observations)
        f = transition(dt_hours)
        predicted = [sum(f[i][k] * self.state[k] for k in range(3)) for i in range(3)]
        covariance = _mul(_mul(f, self.covariance), _transpose(f))
        for i in range(3):
            for j in range(3):
                covariance[i][j] += self.process_noise[i][j]
        if recent_dilution:
            covariance[0][0] += DILUTION_LOG_OD_VARIANCE
            covariance[1][1] += DILUTION_RATE_VARIANCE

        innovation = measured - predicted[0]
        variance = max(measured_variance, self.adaptive_variance)
        expected = covariance[0][0] + variance
        z = abs(innovation) / math.sqrt(expected)
        outlier = z > self.outlier_threshold
        if outlier:
            variance *= (z / self.outlier_threshold) ** 2
            expected = covariance[0][0] + variance

        gain = [covariance[i][0] / expected for i in range(3)]
        self.state = [predicted[i] + gain[i] * innovation for i in range(3)]
        self.covariance = [
            [covariance[i][j] - gain[i] * covariance[0][j] for j in range(3)]
            for i in range(3)
        ]
        self.state[1] = min(max(self.state[1], MIN_RATE), MAX_RATE)
        if not all(math.isfinite(v) for v in self.state):
            raise ValueError("the growth filter's state is no longer finite")
        if not outlier and not recent_dilution:
            self.adaptive_variance = max(
                self.base_variance,
                (1 - ADAPT_WEIGHT) * self.adaptive_variance
                + ADAPT_WEIGHT * min(innovation**2, ADAPT_CAP * expected),
            )


def normalisation_factors(warmup: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Per channel, the median warm-up OD: normalised OD starts near 1."""
    factors = {}
    for channel, values in warmup.items():
        factor = median(values)
        if not factor > 0:
            raise ValueError(
                f"channel {channel}'s warm-up OD has median {factor}: nothing to normalise by"
            )
        factors[channel] = factor
    return factors
