"""Least-squares polynomials, highest degree first."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.calibration_sessions.fitting import FitError, fit_poly
from pioreactor_appliance.calibrations import Curve


class FitTests(SynchronousTestCase):
    def test_a_line_through_exact_points(self) -> None:
        slope, bias = fit_poly([1, 2, 3], [2.5, 4.5, 6.5], 1)
        self.assertAlmostEqual(slope, 2.0)
        self.assertAlmostEqual(bias, 0.5)

    def test_a_quadratic_reads_back_through_the_curve(self) -> None:
        xs = [0.0, 0.5, 1.0, 2.0, 3.0]
        coefficients = fit_poly(xs, [0.1 + 0.4 * x - 0.03 * x * x for x in xs], 2)
        curve = Curve("poly", tuple(coefficients))
        for x in xs:
            self.assertAlmostEqual(curve(x), 0.1 + 0.4 * x - 0.03 * x * x)

    def test_noisy_points_give_the_least_squares_line(self) -> None:
        slope, bias = fit_poly([0, 1, 2, 3], [0.1, 0.9, 2.1, 2.9], 1)
        self.assertAlmostEqual(slope, 0.96)
        self.assertAlmostEqual(bias, 0.06)

    def test_too_few_distinct_points(self) -> None:
        self.assertRaises(FitError, fit_poly, [1, 1, 1], [1, 2, 3], 1)
        self.assertRaises(FitError, fit_poly, [1, 2], [1, 2], 2)
        self.assertRaises(FitError, fit_poly, [1, 2], [1], 1)
