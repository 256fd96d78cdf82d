"""scripts/trial_summary.py: the closing ``N passed, N failed`` line CI reads."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
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
        status, out = self.run_main(trial_output("PASSED (successes=3)"), returncode=2)
        self.assertEqual((status, out.splitlines()[-1]), (1, "3 passed, 1 failed"))

    def test_a_run_that_hung_after_its_summary_is_red(self) -> None:
        summary, why = ts.verdict(ts.parse(trial_output("PASSED (successes=3)")), 124)
        self.assertEqual((summary.line(), why), ("3 passed, 1 failed", "trial printed its summary but did not exit in time (a thread or process kept it alive)"))

    def test_a_run_that_hung_before_its_summary_is_red(self) -> None:
        summary, why = ts.verdict(ts.parse("tests.test_x ... [OK]\n"), 137)
        self.assertEqual((summary.line(), why), ("0 passed, 1 failed", "trial did not finish in time (a test hung)"))

    def test_missing_log(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = ts.main([self.mktemp()])
        self.assertEqual((status, out.getvalue().splitlines()[-1]), (1, "0 passed, 1 failed"))


HANGS_AT_EXIT = '''
import os
import threading

from twisted.trial.unittest import TestCase


class Hangs(TestCase):
    def test_passes_then_keeps_its_process_alive(self):
        with open(os.environ["HANG_PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
        threading.Thread(target=threading.Event().wait).start()  # not a daemon: the process cannot exit
'''


class TestCommandTests(TestCase):
    """scripts/test itself: a run that never ends is stopped, and the closing line says red."""

    timeout = 120

    async def test_a_worker_that_cannot_exit_is_killed_and_counted_as_a_failure(self) -> None:
        workdir = Path(self.mktemp()).resolve()  # scripts/test runs from the repository's root
        workdir.mkdir(parents=True)
        (workdir / "test_hangs_at_exit.py").write_text(HANGS_AT_EXIT)
        pid_file = workdir / "worker.pid"
        env = {**os.environ, "TRIAL_TIMEOUT": "15", "TRIAL_JOBS": "2", "HANG_PID_FILE": str(pid_file), "PYTHONPATH": str(workdir)}
        command = str(SCRIPT.parent / "test")
        out, _err, code = await getProcessOutputAndValue(
            command, [str(workdir / "test_hangs_at_exit.py")], env=env, path=str(workdir), reactor=reactor
        )
        self.assertEqual((code, out.decode().splitlines()[-1]), (1, "1 passed, 1 failed"), out[-2000:])
        worker = int(pid_file.read_text())
        for _ in range(100):
            if not _alive(worker):
                return
            await deferLater(reactor, 0.05)
        self.fail(f"trial's worker {worker} outlived the run")


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
