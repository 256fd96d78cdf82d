"""CommandRunner with real child processes: exit codes, output, timeouts, and no shell in between."""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pioreactor_appliance.commands import CommandRunner, Result

PY = sys.executable


class CommandRunnerTests(TestCase):
    def setUp(self) -> None:
        self.runner = CommandRunner(reactor, reactor)

    async def test_success_keeps_stdout_and_stderr(self) -> None:
        result = await self.runner.run(
            [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"], 10
        )
        self.assertEqual(result.exit_code, 0)
        self.assertTrue(result.ok)
        self.assertIn("out", result.output)
        self.assertIn("err", result.output)

    async def test_failure_gives_the_exit_code_and_the_last_lines(self) -> None:
        result = await self.runner.run(["sh", "-c", "echo one; echo two; exit 3"], 10)
        self.assertEqual(result.exit_code, 3)
        self.assertFalse(result.ok)
        self.assertEqual(result.last_lines(1), "two")

    async def test_a_command_past_its_timeout_is_killed(self) -> None:
        result = await self.runner.run([PY, "-c", "import time; time.sleep(30)"], 0.3)
        self.assertTrue(result.timed_out)
        self.assertFalse(result.ok)
        self.assertIsNone(result.exit_code)

    async def test_output_is_bounded_to_its_tail(self) -> None:
        runner = CommandRunner(reactor, reactor, max_output=100)
        result = await runner.run([PY, "-c", "print('x' * 5000); print('END')"], 10)
        self.assertLessEqual(len(result.output), 100)
        self.assertEqual(result.last_lines(1), "END")

    async def test_arguments_reach_the_program_literally(self) -> None:
        victim = Path(self.mktemp())
        victim.write_text("keep")
        argument = f"x; rm -f {victim}; echo $HOME `id`"
        result = await self.runner.run(
            [PY, "-c", "import sys; print(repr(sys.argv[1:]))", argument], 10
        )
        self.assertEqual(result.output.strip(), repr([argument]))
        self.assertTrue(victim.exists())

    def test_a_missing_program_raises(self) -> None:
        self.assertRaises(OSError, self.runner.run, ["/nonexistent/program-xyz"], 10)

    def test_an_empty_command_is_refused(self) -> None:
        self.assertRaises(ValueError, self.runner.run, [], 1)

    def test_last_lines(self) -> None:
        self.assertEqual(Result(1, "a\nb\nc\n").last_lines(2), "b\nc")
        self.assertEqual(Result(0, "").last_lines(), "")
