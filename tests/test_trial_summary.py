"""scripts/trial_summary.py: the closing ``N passed, N failed`` line CI reads."""

from __future__ import annotations

import importlib.util
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import TestCase

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trial_summary.py"


def load_script() -> ModuleType:
    """Import the script by path: scripts/ is not a package, and should not need to be."""
    spec = importlib.util.spec_from_file_location("trial_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("trial_summary", module)
    spec.loader.exec_module(module)
    return module


ts = load_script()


def trial_output(summary: str, ran: int = 3) -> str:
    return (
        "tests.test_x\n  XTests\n    test_a ...                                [OK]\n"
        "\n-------------------------------------------------------------------------------\n"
        f"Ran {ran} tests in 0.012s\n\n{summary}\n"
    )


class ParseTests(TestCase):
    def test_passed(self) -> None:
        s = ts.parse(trial_output("PASSED (successes=3)"))
        self.assertEqual((s.passed, s.failed, s.skipped, s.found), (3, 0, 0, True))
        self.assertEqual(s.line(), "3 passed, 0 failed")

    def test_failed_with_errors(self) -> None:
        s = ts.parse(trial_output("FAILED (failures=2, errors=1, successes=7)", ran=10))
        self.assertEqual((s.passed, s.failed), (7, 3))
        self.assertEqual(s.line(), "7 passed, 3 failed")

    def test_skips_and_todos(self) -> None:
        s = ts.parse(trial_output("PASSED (skips=2, expectedFailures=1, successes=4)", ran=7))
        self.assertEqual(s.line(), "5 passed, 0 failed, 2 skipped")

    def test_unexpected_success_is_a_failure(self) -> None:
        s = ts.parse(trial_output("PASSED (unexpectedSuccesses=1, successes=2)"))
        self.assertEqual((s.passed, s.failed), (2, 1))

    def test_no_tests(self) -> None:
        s = ts.parse(trial_output("PASSED", ran=0))
        self.assertEqual((s.passed, s.failed, s.found), (0, 0, True))
        self.assertEqual(ts.verdict(s, 0)[1], "no test ran")

    def test_no_summary_is_a_crash(self) -> None:
        s = ts.parse("Traceback (most recent call last):\n  ...\nImportError: boom\n")
        self.assertFalse(s.found)
        shown, problem = ts.verdict(s, 1)
        self.assertEqual(shown.line(), "0 passed, 1 failed")
        self.assertIsNotNone(problem)

    def test_last_summary_wins(self) -> None:
        """A test that prints a lookalike summary must not be taken for trial's own."""
        text = trial_output("FAILED (errors=9)", ran=9) + trial_output("PASSED (successes=2)", ran=2)
        self.assertEqual(ts.parse(text).line(), "2 passed, 0 failed")

    def test_summary_without_ran_line_is_ignored(self) -> None:
        self.assertFalse(ts.parse("PASSED (successes=5)\n").found)


class MainTests(TestCase):
    def run_main(self, text: str, returncode: int = 0) -> tuple[int, str]:
        log = Path(self.mktemp())
        log.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = ts.main([str(log), "--returncode", str(returncode)])
        return status, out.getvalue()

    def test_green(self) -> None:
        status, out = self.run_main(trial_output("PASSED (successes=3)"))
        self.assertEqual((status, out.splitlines()[-1]), (0, "3 passed, 0 failed"))

    def test_red_on_failures(self) -> None:
        status, out = self.run_main(trial_output("FAILED (failures=1, successes=2)"), returncode=1)
        self.assertEqual((status, out.splitlines()[-1]), (1, "2 passed, 1 failed"))

    def test_red_when_nothing_ran(self) -> None:
        status, out = self.run_main(trial_output("PASSED", ran=0))
        self.assertEqual((status, out.splitlines()[-1]), (1, "0 passed, 0 failed"))

    def test_red_when_trial_exit_status_disagrees(self) -> None:
        status, _ = self.run_main(trial_output("PASSED (successes=3)"), returncode=2)
        self.assertEqual(status, 1)

    def test_missing_log(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = ts.main([self.mktemp()])
        self.assertEqual((status, out.getvalue().splitlines()[-1]), (1, "0 passed, 1 failed"))
