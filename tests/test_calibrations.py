"""Calibration curves: evaluate and invert as the jobs need, and refuse files that cannot be used."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pioreactor_appliance.calibrations import (
    ACTIVE_NAMESPACE,
    Calibration,
    CalibrationError,
    active_calibration,
    calibration_path,
)
from pioreactor_appliance.jobs.unit_state import PersistentCache

PUMP = """\
calibration_type: simple_peristaltic_pump
calibration_name: media-1
calibrated_on_pioreactor_unit: pio1
created_at: 2026-01-05 12:00:00+00:00
curve_data_: {type: poly, coefficients: [0.0912, 0.0]}
x: Duration
y: Volume
recorded_data: {x: [10.0, 20.0], y: [0.91, 1.83]}
hz: 250.0
dc: 100.0
voltage: 12.1
"""

# A spline through (0, 0), (1, 1), (2, 4), rising: y = x^2 on [0, 2] piecewise.
OD = """
calibration_type: od
calibration_name: od90-1
curve_data_: {type: spline, knots: [0.0, 1.0, 2.0], coefficients: [[0.0, 0.0, 1.0, 0.0], [1.0, 2.0, 1.0, 0.0]]}
recorded_data: {x: [0.0, 0.5, 1.0, 2.0], y: [0.0, 0.25, 1.0, 4.0]}
angle: "90"
ir_led_intensity: 80.0
"""


class CurveTests(SynchronousTestCase):
    def test_pump_poly_both_ways(self) -> None:
        cal = Calibration.from_text(PUMP)
        self.assertAlmostEqual(cal.x_to_y(10), 0.912)
        self.assertAlmostEqual(cal.y_to_x(1.0), 1.0 / 0.0912, places=6)
        self.assertEqual(cal.fields["hz"], 250.0)

    def test_spline_evaluates_and_inverts_inside_the_range(self) -> None:
        cal = Calibration.from_text(OD)
        self.assertAlmostEqual(cal.x_to_y(1.5), 2.25)
        self.assertAlmostEqual(cal.y_to_x(2.25), 1.5, places=6)
        self.assertEqual(cal.y_range, (0.0, 4.0))

    def test_a_turning_curve_prefers_the_root_in_the_recorded_range(self) -> None:
        # y = -(x - 3)^2 + 9 = -x^2 + 6x: y=5 at x=1 and x=5; recorded 0..2.
        text = "calibration_type: od\ncalibration_name: c\ncurve_data_: {type: poly, coefficients: [-1, 6, 0]}\nrecorded_data: {x: [0, 2], y: [0, 8]}\n"
        self.assertAlmostEqual(Calibration.from_text(text).y_to_x(5), 1.0, places=6)

    def test_unsolvable_and_bad_files_are_refused(self) -> None:
        with self.assertRaisesRegex(CalibrationError, "no x gives"):
            Calibration.from_text(PUMP).y_to_x(-50)
        for text, reason in [
            ("[1, 2", "not valid YAML"),
            ("- a list", "YAML mapping"),
            (
                "calibration_type: od\ncalibration_name: x\n",
                "missing field curve_data_",
            ),
            (
                "calibration_type: od\ncalibration_name: x\ncurve_data_: {type: cubic}\n",
                "poly, spline or akima",
            ),
            (
                "calibration_type: od\ncalibration_name: x\ncurve_data_: {type: poly, coefficients: [a]}\n",
                "numeric coefficients",
            ),
            (
                "calibration_type: od\ncalibration_name: x\ncurve_data_: {type: spline, knots: [0, 1], coefficients: [[1, 2]]}\n",
                "one \\[a, b, c, d\\]",
            ),
        ]:
            with self.assertRaisesRegex(CalibrationError, reason):
                Calibration.from_text(text)
        for device, name in [
            ("../etc", "x"),
            ("..", "x"),
            (".", "x"),
            ("pump", ".hidden"),
            ("-rf", "x"),
            ("pump", "x\n"),
            ("a  b", "x"),
            ("pump", "x" * 251),
        ]:
            with (
                self.subTest(device=device, name=name),
                self.assertRaisesRegex(CalibrationError, "bad calibration device"),
            ):
                calibration_path(Path("/data"), device, name)
        self.assertEqual(
            calibration_path(Path("/data"), "media_pump", "my cal.v2"),
            Path("/data/storage/calibrations/media_pump/my cal.v2.yaml"),
        )


class ActiveTests(TestCase):
    async def test_the_active_calibration_is_read_from_its_file(self) -> None:
        data_dir = Path(self.mktemp())
        cache = PersistentCache(data_dir / "cache.json", reactor)
        self.addCleanup(cache.close)
        self.assertIsNone(await active_calibration(data_dir, cache, "media_pump"))
        path = calibration_path(data_dir, "media_pump", "media-1")
        path.parent.mkdir(parents=True)
        path.write_text(PUMP)
        await cache.set(ACTIVE_NAMESPACE, "media_pump", "media-1")
        self.assertEqual(
            (await active_calibration(data_dir, cache, "media_pump")).calibration_name,
            "media-1",
        )
        await cache.set(ACTIVE_NAMESPACE, "media_pump", "gone")
        with self.assertRaisesRegex(CalibrationError, "cannot be read"):
            await active_calibration(data_dir, cache, "media_pump")
