"""``/unit_api/system/...`` with real child processes standing in for systemctl, date and pip."""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import evolve
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pioreactor_appliance.bodies import form_file_body
from pioreactor_appliance.commands import CommandRunner, Result
from pioreactor_appliance.config import Config, ConfigError
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.resources.system import SystemApi, SystemSettings
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import request, response_of

PY = sys.executable
NOW = 1767614400.123  # 2026-01-05T12:00:00.123Z
LIMITS = attrs.evolve(Limits.defaults(), zip_entries=5, zip_uncompressed_bytes=100_000)


class RecordingRunner(CommandRunner):
    """The real runner, remembering every argument list it started."""

    def __init__(self) -> None:
        super().__init__(reactor, reactor)
        self.started: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], timeout: float) -> Deferred[Result]:
        self.started.append(tuple(argv))
        return super().run(argv, timeout)


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def fails(code: int, out: str = "out", err: str = "boom") -> tuple[str, ...]:
    return ("sh", "-c", f"echo {out}; echo {err} >&2; exit {code}")


class SystemApiTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.tasks = TaskRegistry(reactor, "pio1", max_count=50, max_age=600)
        self.runner = RecordingRunner()
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        self.settings = SystemSettings(
            commands={
                "reboot": ("true",),
                "shutdown": ("true",),
                "web_server_status": ("sh", "-c", "echo active", "pioreactor.service"),
                "web_server_restart": ("true",),
                "set_clock": ("true",),
                "update": ("true",),
            },
            timeout=5,
            update_timeout=5,
            power_delay=0,
            update_package="pioreactor-appliance",
        )

    def serve(self, **commands: tuple[str, ...]) -> None:
        settings = evolve(
            self.settings, commands={**self.settings.commands, **commands}
        )
        self.stub = StubTreq(
            Router([SystemApi(self.runner, self.tasks, self.clock, settings, self.root, LIMITS)])
        )

    def with_settings(self, **changes: Any) -> None:
        self.settings = evolve(self.settings, **changes)

    async def call(self, method: str, path: str, expect: int, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs = {
                "data": json.dumps(body).encode(),
                "headers": {b"content-type": [b"application/json"]},
            }
        code, answer = await request(self.stub, method, path, **kwargs)
        self.assertEqual(code, expect, answer)
        return answer

    async def result(self, accepted: dict[str, Any]) -> dict[str, Any]:
        """Poll the task until it ends, moving the API's clock past any delay."""
        task = self.tasks.get(accepted["task_id"])
        for _ in range(1000):
            if task.finished:
                return dict(task.body())
            self.clock.advance(0)
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("the task did not finish")

    def recorder(self, path: Path) -> tuple[str, ...]:
        """A command that writes the arguments it was given to ``path``."""
        return (
            PY,
            "-c",
            "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))",
            str(path),
        )

    async def test_clock_reads_the_units_time(self) -> None:
        self.serve()
        self.assertEqual(
            await self.call("GET", "/unit_api/system/utc_clock", 200),
            {"status": "success", "clock_time": "2026-01-05T12:00:00.123Z"},
        )

    async def test_set_clock_passes_the_validated_time_as_one_argument(self) -> None:
        written = Path(self.mktemp())
        self.serve(set_clock=self.recorder(written))
        accepted = await self.call(
            "POST",
            "/unit_api/system/utc_clock",
            202,
            {"utc_clock_time": "2026-01-05T12:00:00.123Z"},
        )
        self.assertEqual((await self.result(accepted))["result"], True)
        self.assertEqual(
            json.loads(written.read_text()), ["2026-01-05 12:00:00.123000"]
        )
        accepted = await self.call(
            "PATCH",
            "/unit_api/system/utc_clock",
            202,
            {"utc_clock_time": "2026-01-05T13:00:00+00:00"},
        )
        self.assertEqual((await self.result(accepted))["status"], "succeeded")
        self.assertEqual(
            json.loads(written.read_text()), ["2026-01-05 13:00:00.000000"]
        )

    async def test_set_clock_refuses_bad_times(self) -> None:
        self.serve()
        for text, mention in [
            ("2026-01-05T12:00:00+02:00", "not in UTC"),
            ("2026-01-05T12:00:00", "no timezone"),
            ("yesterday; rm -rf /", "Invalid isoformat"),
            ("", "Invalid isoformat"),
        ]:
            error = await self.call(
                "POST", "/unit_api/system/utc_clock", 400, {"utc_clock_time": text}
            )
            self.assertEqual(
                error["error"], "Invalid utc_clock_time format. Use ISO 8601."
            )
            self.assertIn(mention, error["cause"])
        for body in [
            {},
            {"utc_clock_time": 12},
            {"utc_clock_time": "2026-01-05T12:00:00Z", "extra": 1},
            [],
        ]:
            await self.call("POST", "/unit_api/system/utc_clock", 400, body)
        self.assertEqual(self.runner.started, [])

    async def test_a_failing_command_fails_the_task_with_its_exit_code_and_output(
        self,
    ) -> None:
        self.serve(set_clock=fails(3))
        accepted = await self.call(
            "POST",
            "/unit_api/system/utc_clock",
            202,
            {"utc_clock_time": "2026-01-05T12:00:00Z"},
        )
        result = await self.result(accepted)
        self.assertEqual(result["status"], "failed")
        self.assertEqual(result["error"], "Setting the clock failed with exit code 3.")
        self.assertIn("out\nboom", result["cause"])

    async def test_a_program_that_cannot_start_fails_the_task(self) -> None:
        self.serve(reboot=("/nonexistent/reboot",))
        result = await self.result(
            await self.call("POST", "/unit_api/system/reboot", 202)
        )
        self.assertEqual(result["status"], "failed")
        self.assertIn("could not start", result["error"])

    async def test_reboot_runs_after_the_delay(self) -> None:
        self.with_settings(power_delay=5)
        self.serve()
        accepted = await self.call("POST", "/unit_api/system/reboot", 202)
        self.assertEqual(
            set(accepted), {"unit", "task_id", "result_url_path", "status"}
        )
        await deferLater(reactor, 0.05, lambda: None)
        self.clock.advance(4.9)
        self.assertEqual(self.runner.started, [])
        self.clock.advance(0.1)
        self.assertEqual((await self.result(accepted))["result"], True)
        self.assertEqual(self.runner.started, [("true",)])

    async def test_power_actions_share_a_lock_while_one_runs(self) -> None:
        self.with_settings(power_delay=5)
        self.serve()
        first = await self.call("POST", "/unit_api/system/reboot", 202)
        busy = await self.call("PATCH", "/unit_api/system/shutdown", 202)
        self.assertEqual(
            busy,
            {
                "status": "running",
                "lock": "power-lock",
                "retry_after_s": 1,
                "remediation": "Wait for the running operation to finish, then retry.",
            },
        )
        await deferLater(reactor, 0.05, lambda: None)
        self.clock.advance(5)
        await self.result(first)
        self.assertEqual(self.runner.started, [("true",)])

    async def test_power_actions_are_limited_to_one_per_15_seconds(self) -> None:
        self.serve()
        await self.result(await self.call("POST", "/unit_api/system/shutdown", 202))
        response = await response_of(self.stub, "POST", "/unit_api/system/reboot")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"15"])
        self.clock.advance(15)
        await self.result(await self.call("POST", "/unit_api/system/reboot", 202))

    async def test_update_installs_the_package_or_a_version(self) -> None:
        written = Path(self.mktemp())
        self.serve(update=self.recorder(written))
        await self.result(await self.call("POST", "/unit_api/system/update", 202, {}))
        self.assertEqual(json.loads(written.read_text()), ["pioreactor-appliance"])
        self.clock.advance(10)
        accepted = await self.call(
            "PATCH",
            "/unit_api/system/update/app",
            202,
            {"options": {"version": "26.7.2rc1"}, "env": {"A": "b"}},
        )
        self.assertEqual((await self.result(accepted))["result"], True)
        self.assertEqual(
            json.loads(written.read_text()), ["pioreactor-appliance==26.7.2rc1"]
        )

    async def test_update_refuses_bad_input(self) -> None:
        self.serve()
        for body, mention in [
            ({"args": ["--branch", "dev"]}, "not supported"),
            ({"options": {"repo": "evil/fork"}}, "repo"),
            ({"options": {"sha": "abcd"}}, "sha"),
            ({"options": {"version": "1.0; rm -rf /"}}, "Invalid version"),
            ({"options": {"version": None}}, "Invalid version"),
            ({"options": {"version": 2}}, "Invalid version"),
        ]:
            error = await self.call("POST", "/unit_api/system/update", 400, body)
            self.assertIn(mention, error["error"] + error["cause"])
        await self.call("POST", "/unit_api/system/update", 400, {"args": "x"})
        await self.call("POST", "/unit_api/system/update", 415)
        error = await self.call("POST", "/unit_api/system/update/firmware", 404, {})
        self.assertEqual(error["error"], "Invalid target")
        self.assertEqual(self.runner.started, [])

    async def test_update_times_out_and_is_rate_limited(self) -> None:
        self.with_settings(update_timeout=0.3)
        self.serve(update=(PY, "-c", "import time; time.sleep(30)"))
        accepted = await self.call("POST", "/unit_api/system/update", 202, {})
        busy = await self.call("POST", "/unit_api/system/update/app", 202, {})
        self.assertEqual(busy["lock"], "update-lock")
        result = await self.result(accepted)
        self.assertEqual(result["status"], "failed")
        self.assertEqual(
            result["error"], "The update timed out after 0.3 s and was killed."
        )
        await self.call("POST", "/unit_api/system/update", 429, {})

    async def send_archive(self, expect: int, data: bytes, field: str = "archive") -> Any:
        body, content_type = form_file_body(field, "release.zip", data)
        headers = {b"content-type": [content_type]}
        code, answer = await request(self.stub, "POST", "/unit_api/system/update_from_archive", data=body, headers=headers)
        self.assertEqual(code, expect, answer)
        return answer

    def staged(self) -> list[Path]:
        return sorted(self.root.glob(".release-*"))

    async def test_update_from_archive_installs_the_packages_wheel(self) -> None:
        written = Path(self.mktemp())
        self.serve(update=self.recorder(written))
        release = {
            "wheels/Pioreactor.Appliance-26.7.2-py3-none-any.whl": b"ours",
            "wheels/twisted-25.5.0-py3-none-any.whl": b"a dependency",
            "sha256sums.txt": b"...",
            "RELEASE_NOTES.md": b"notes",
        }
        accepted = await self.send_archive(202, zipped(release))
        wheel = Path(self.staged()[0], "wheels", "Pioreactor.Appliance-26.7.2-py3-none-any.whl")
        self.assertEqual(wheel.read_bytes(), b"ours")
        self.assertEqual((await self.result(accepted))["result"], True)
        self.assertEqual(json.loads(written.read_text()), [str(wheel)])
        self.assertEqual(self.staged(), [])
        # The same lock and rate limit as /system/update: one update per 10 s, whichever route asked.
        await self.call("POST", "/unit_api/system/update", 429, {})
        await self.send_archive(429, zipped(release))
        self.assertEqual(self.staged(), [])
        self.clock.advance(10)
        await self.result(await self.call("POST", "/unit_api/system/update", 202, {}))
        self.assertEqual(json.loads(written.read_text()), ["pioreactor-appliance"])

    async def test_a_failed_install_fails_the_task_with_its_output_and_cleans_up(self) -> None:
        self.serve(update=fails(1, out="no matching distribution"))
        accepted = await self.send_archive(202, zipped({"pioreactor_appliance-1.0-py3-none-any.whl": b"x"}))
        result = await self.result(accepted)
        self.assertEqual((result["status"], result["error"]), ("failed", "The update failed with exit code 1."))
        self.assertIn("no matching distribution", result["cause"])
        self.assertEqual(self.staged(), [])

    async def test_update_from_archive_waits_for_a_running_update(self) -> None:
        self.serve(update=(PY, "-c", "import time; time.sleep(0.5)"))
        running = await self.call("POST", "/unit_api/system/update", 202, {})
        busy = await self.send_archive(202, zipped({"pioreactor_appliance-1.0-py3-none-any.whl": b"x"}))
        self.assertEqual(busy["lock"], "update-lock")
        self.assertEqual(self.staged(), [])
        self.assertEqual((await self.result(running))["result"], True)

    async def test_bad_release_archives_are_refused_and_nothing_runs(self) -> None:
        self.serve()
        ours = "pioreactor_appliance-26.7.2-py3-none-any.whl"
        for data, status, mention in [
            (b"not a zip", 400, "not a readable zip"),
            (zipped({}), 400, "no wheel"),
            (zipped({"notes.txt": b"x"}), 400, "no wheel"),
            (zipped({"pioreactor-26.7.2-py3-none-any.whl": b"x"}), 400, "0 wheels of pioreactor-appliance"),
            (zipped({ours: b"x", "a/" + ours: b"y"}), 400, "2 wheels of pioreactor-appliance"),
            (zipped({ours: b"x", "update.sh": b"rm -rf /"}), 400, "'update.sh' is neither a wheel nor a note"),
            (zipped({"pioreactor_appliance.whl": b"x"}), 400, "not named as a wheel"),
            (zipped({"../" + ours: b"x"}), 400, "outside"),
            (zipped({f"{i}.txt": b"x" for i in range(6)} | {ours: b"x"}), 413, "at most 5"),
            (zipped({ours: os.urandom(100_001)}), 413, "at most 100000"),
        ]:
            error = await self.send_archive(status, data)
            self.assertIn(mention, error["cause"])
            self.assertEqual(self.staged(), [])
        error = await self.send_archive(400, zipped({ours: b"x"}), field="file")
        self.assertEqual(error["error"], "No archive uploaded")
        self.assertEqual(self.runner.started, [])

    async def test_web_server_status(self) -> None:
        self.serve()
        response = await response_of(
            self.stub, "GET", "/unit_api/system/web_server/status"
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=3"]
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/system/web_server/status", 200),
            {
                "service": "pioreactor.service",
                "state": "ready",
                "raw_status": "pioreactor.service=active",
            },
        )
        self.serve(
            web_server_status=("sh", "-c", "echo inactive; exit 3", "web.service")
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/system/web_server/status", 200),
            {
                "service": "web.service",
                "state": "disconnected",
                "raw_status": "web.service=inactive",
            },
        )
        self.serve(web_server_status=("/nonexistent/systemctl",))
        status = await self.call("GET", "/unit_api/system/web_server/status", 200)
        self.assertEqual(status["state"], "disconnected")

    async def test_web_server_restart(self) -> None:
        self.serve(web_server_restart=fails(1))
        result = await self.result(
            await self.call("POST", "/unit_api/system/web_server/restart", 202)
        )
        self.assertEqual(
            result["error"], "Restarting the web server failed with exit code 1."
        )
        await self.call("POST", "/unit_api/system/web_server/restart", 429)
        self.clock.advance(15)
        self.serve()
        self.assertEqual(
            (
                await self.result(
                    await self.call("PATCH", "/unit_api/system/web_server/restart", 202)
                )
            )["result"],
            True,
        )

    async def test_restart_soon_restarts_after_the_delay_and_logs_a_failure(self) -> None:
        self.with_settings(power_delay=5)
        system = SystemApi(self.runner, self.tasks, self.clock, self.settings, self.root, LIMITS)
        self.assertEqual(system.restart_soon("to use new files"), 5)
        self.clock.advance(4.9)
        self.assertEqual(self.runner.started, [])
        self.clock.advance(0.1)
        self.assertEqual(self.runner.started, [("true",)])
        failing = SystemApi(
            self.runner,
            self.tasks,
            self.clock,
            evolve(self.settings, commands={**self.settings.commands, "web_server_restart": fails(3)}),
            self.root,
            LIMITS,
        )
        seen: list[str] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        failing.restart_soon("to use new files")
        self.clock.advance(5)
        for _ in range(300):
            if any("to use new files failed" in formatEvent(e) for e in seen):
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(any("Restarting the web server to use new files failed with exit code 3" in formatEvent(e) for e in seen))


class SettingsTests(SynchronousTestCase):
    def config(self, text: str) -> Config:
        from pioreactor_appliance.config import parse_text

        return Config.merge(
            [
                (
                    "defaults",
                    parse_text(
                        Path(__file__)
                        .parents[2]
                        .joinpath("pioreactor_appliance/default_config.ini")
                        .read_text(),
                        "d",
                    ),
                ),
                ("test", parse_text(text, "test")),
            ]
        )

    def test_defaults_are_systemd_commands(self) -> None:
        settings = SystemSettings.from_config(Config.defaults())
        self.assertEqual(settings.commands["reboot"], ("sudo", "systemctl", "reboot"))
        self.assertEqual(
            settings.commands["set_clock"], ("sudo", "date", "--utc", "--set")
        )

    def test_words_are_split_shell_style(self) -> None:
        settings = SystemSettings.from_config(
            self.config("[system.commands]\nreboot=sh -c 'echo a; exit 1'\n")
        )
        self.assertEqual(settings.commands["reboot"], ("sh", "-c", "echo a; exit 1"))

    def test_bad_settings_are_refused(self) -> None:
        for text in [
            "[system.commands]\nreboot=sh -c 'unclosed\n",
            "[system.commands]\nreboot=\n",
            "[system]\nupdate_package=x; rm\n",
            "[system]\npower_delay_seconds=soon\n",
        ]:
            self.assertRaises(
                ConfigError, SystemSettings.from_config, self.config(text)
            )
