#!/usr/bin/env python3
"""Turn trial's closing summary into the one line CI reads: ``N passed, N failed``.

CI does not understand trial's own ``PASSED (successes=3)`` / ``FAILED (...)``
line, so ``scripts/test`` tees trial's output into a file and this script
prints the plain counts as the last line, and exits non-zero when the run
must not count as green: anything failed, nothing ran, or trial crashed
before it could print a summary.

Usage: ``trial_summary.py LOG [--returncode RC]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# trial prints e.g. "FAILED (skips=1, failures=2, errors=1, successes=7)" or a
# bare "PASSED" when no test ran; only the last such line is the real summary
# (test output could contain lookalikes earlier on).
SUMMARY_RE = re.compile(r"^(PASSED|FAILED)(?: \((?P<stats>[a-zA-Z]+=\d+(?:, [a-zA-Z]+=\d+)*)\))?\s*$")
RAN_RE = re.compile(r"^Ran (\d+) tests? in ")

PASSED_STATS = ("successes", "expectedFailures")
FAILED_STATS = ("failures", "errors", "unexpectedSuccesses")
SKIPPED_STATS = ("skips",)
# scripts/test runs trial under timeout(1): 124 when it sent TERM, 137 when it had to KILL.
TIMEOUT_STATUSES = (124, 137)


@dataclass(frozen=True)
class Summary:
    """Counts taken from trial's summary; ``found`` is False when trial printed none."""

    passed: int
    failed: int
    skipped: int
    found: bool

    def line(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


def parse(output: str) -> Summary:
    """Read the last trial summary in ``output``; counts are zero if there is none."""
    stats: dict[str, int] | None = None
    ran_seen = False
    for raw in output.splitlines():
        line = raw.strip()
        if RAN_RE.match(line):
            ran_seen = True
            continue
        match = SUMMARY_RE.match(line)
        if match and ran_seen:
            stats = {}
            for item in (match.group("stats") or "").split(", "):
                if item:
                    key, _, value = item.partition("=")
                    stats[key] = int(value)
            ran_seen = False
    if stats is None:
        return Summary(0, 0, 0, found=False)
    return Summary(
        passed=sum(stats.get(k, 0) for k in PASSED_STATS),
        failed=sum(stats.get(k, 0) for k in FAILED_STATS),
        skipped=sum(stats.get(k, 0) for k in SKIPPED_STATS),
        found=True,
    )


def verdict(summary: Summary, returncode: int) -> tuple[Summary, str | None]:
    """The summary to print and why the run is red (None when green).

    A crash, a timeout or an exit status that disagrees with a green summary is
    reported as one failure so that the closing line itself shows the run is
    red, not only the exit code.
    """
    timed_out = returncode in TIMEOUT_STATUSES
    if not summary.found:
        why = "trial did not finish in time (a test hung)" if timed_out else "trial printed no summary (it crashed or was killed)"
        return Summary(0, 1, 0, found=False), why
    if summary.failed:
        return summary, None  # the closing line already says it is red
    if summary.passed == 0:
        return summary, "no test ran"
    if returncode != 0:
        # Counted as a failure so that the closing line says red too.
        red = Summary(summary.passed, 1, summary.skipped, found=True)
        if timed_out:
            return red, "trial printed its summary but did not exit in time (a thread or process kept it alive)"
        return red, f"trial exited with status {returncode}"
    return summary, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="file holding trial's output")
    parser.add_argument("--returncode", type=int, default=0, help="trial's exit status")
    args = parser.parse_args(argv)
    try:
        text = args.log.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        text = ""
        print(f"trial_summary: cannot read {args.log}: {e}", file=sys.stderr)
    summary, problem = verdict(parse(text), args.returncode)
    if problem:
        print(f"trial_summary: {problem}", file=sys.stderr)
    sys.stderr.flush()
    print(summary.line(), flush=True)
    red = problem is not None or summary.failed > 0
    return 1 if red else 0


if __name__ == "__main__":
    sys.exit(main())
