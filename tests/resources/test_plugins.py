"""``/unit_api/plugins/...`` with a stand-in pip: a real child process that records the arguments it was given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from attrs import evolve
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pioreactor_appliance.commands import CommandRunner
from pioreactor_appliance.config import Config, ConfigError
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.resources.plugins import (
    PluginsApi,
    PluginSettings,
    installed_plugins,
)
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import request, response_of

PIP = """\
import json, sys
record, code = sys.argv[1], int(sys.argv[2])
with open(record, "w") as f:
    json.dump(sys.argv[3:], f)
print("Collecting the package")
if code:
    print("ERROR: No matching distribution found", file=sys.stderr)
sys.exit(code)
"""


class CountingRegistry(Registry):
    """A registry that counts how often it was asked to look for plugins again."""

    def __init__(self) -> None:
        super().__init__()
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1


def dist_info(
    site: Path, name: str, version: str, metadata: str = "", files: tuple[str, ...] = ()
) -> None:
    """An installed distribution's metadata, as pip leaves it in site-packages."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{metadata}"
    )
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


class PluginsApiTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "wheels").mkdir(parents=True)
        self.record = self.root.parent / "argv.json"
        script = self.root.parent / "pip.py"
        script.write_text(PIP)
        self.site = self.root.parent / "site"
        self.site.mkdir()
        self.tasks = TaskRegistry(reactor, "pio1", max_count=50, max_age=600)
        self.registry = CountingRegistry()
        self.settings = PluginSettings(
            pip=(sys.executable, str(script), str(self.record), "0"),
            allowed=frozenset(),
            timeout=10,
        )
        self.serve()

    def serve(self, **changes: Any) -> None:
        self.settings = evolve(self.settings, **changes)
        api = PluginsApi(
            self.root,
            CommandRunner(reactor, reactor),
            self.tasks,
            self.registry,
            self.settings,
            4096,
            search_path=[str(self.site)],
        )
        self.stub = StubTreq(Router([api]))

    async def call(
        self, path: str, expect: int, body: Any, method: str = "POST"
    ) -> Any:
        code, answer = await request(
            self.stub,
            method,
            path,
            data=json.dumps(body).encode(),
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(code, expect, answer)
        return answer

    async def result(self, accepted: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(accepted["task_id"])
        for _ in range(1000):
            if task.finished:
                return dict(task.body())
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("the task did not finish")

    def pip_argv(self) -> list[str]:
        return json.loads(self.record.read_text())

    async def test_install_runs_pip_with_the_name_or_a_version(self) -> None:
        result = await self.result(
            await self.call(
                "/unit_api/plugins/install", 202, {"args": ["pioreactor-air-bubbler"]}
            )
        )
        self.assertEqual((result["status"], result["result"]), ("succeeded", True))
        self.assertEqual(
            self.pip_argv(),
            ["install", "--no-input", "--upgrade", "pioreactor-air-bubbler"],
        )
        self.assertEqual(self.registry.reloads, 1)
        body = {"args": ["pioreactor_relay"], "options": {"version": "0.4.0"}}
        result = await self.result(
            await self.call("/unit_api/plugins/install", 202, body, method="PATCH")
        )
        self.assertEqual(result["result"], True)
        self.assertEqual(
            self.pip_argv(),
            ["install", "--no-input", "--upgrade", "pioreactor_relay==0.4.0"],
        )
        self.assertEqual(self.registry.reloads, 2)

    async def test_install_from_a_wheel_in_the_data_directory(self) -> None:
        wheel = self.root / "wheels" / "pioreactor_relay-0.4.0-py3-none-any.whl"
        wheel.write_bytes(b"PK")
        body = {
            "args": ["pioreactor-relay"],
            "options": {"source": "wheels/pioreactor_relay-0.4.0-py3-none-any.whl"},
        }
        result = await self.result(
            await self.call("/unit_api/plugins/install", 202, body)
        )
        self.assertEqual(result["result"], True)
        self.assertEqual(
            self.pip_argv(),
            [
                "install",
                "--no-input",
                "--force-reinstall",
                "--no-deps",
                str(wheel.resolve()),
            ],
        )

    async def test_uninstall_runs_pip_uninstall(self) -> None:
        result = await self.result(
            await self.call(
                "/unit_api/plugins/uninstall", 202, {"args": ["pioreactor-relay"]}
            )
        )
        self.assertEqual(result["result"], True)
        self.assertEqual(self.pip_argv(), ["uninstall", "-y", "pioreactor-relay"])
        self.assertEqual(self.registry.reloads, 1)

    async def test_bad_names_are_refused_before_pip_runs(self) -> None:
        for args, error in [
            ([], "Plugin name is required"),
            (["a", "b"], "Install one plugin at a time via the API"),
            (["x; rm -rf /"], "Invalid plugin name."),
            (["-e"], "Invalid plugin name."),
            (["--index-url=http://evil"], "Invalid plugin name."),
            (["git+https://github.com/x/y"], "Invalid plugin name."),
            (["name-"], "Invalid plugin name."),
            ([""], "Invalid plugin name."),
        ]:
            answer = await self.call("/unit_api/plugins/install", 400, {"args": args})
            self.assertEqual(answer["error"], error)
        answer = await self.call(
            "/unit_api/plugins/uninstall", 400, {"args": ["a", "b"]}
        )
        self.assertEqual(answer["error"], "Uninstall one plugin at a time via the API")
        await self.call("/unit_api/plugins/uninstall", 400, {"args": ["$(reboot)"]})
        await self.call(
            "/unit_api/plugins/uninstall",
            400,
            {"args": ["x"], "options": {"yes": True}},
        )
        await self.call("/unit_api/plugins/install", 400, {"args": 5})
        await self.call("/unit_api/plugins/install", 400, {"args": [["x"]]})
        self.assertFalse(self.record.exists())
        self.assertEqual(self.registry.reloads, 0)

    async def test_pip_gets_an_argument_list_not_a_shell_line(self) -> None:
        """Were validation ever bypassed, a hostile value would still reach pip as one literal argument."""
        api = PluginsApi(
            self.root,
            CommandRunner(reactor, reactor),
            self.tasks,
            self.registry,
            self.settings,
            4096,
        )
        self.assertTrue(
            await api._pip("Installing", ["install", "x; rm -rf / $(reboot)"])()
        )
        self.assertEqual(self.pip_argv(), ["install", "x; rm -rf / $(reboot)"])

    async def test_bad_versions_and_sources_are_refused(self) -> None:
        (self.root.parent / "pioreactor_relay-1.0-py3-none-any.whl").write_bytes(b"PK")
        (self.root / "wheels" / "other-1.0-py3-none-any.whl").write_bytes(b"PK")
        for options in [
            {"version": "1.0; rm -rf /"},
            {"version": ">=1.0"},
            {"version": 1},
            {
                "version": "1.0",
                "source": "wheels/pioreactor_relay-1.0-py3-none-any.whl",
            },
            {"index_url": "http://evil"},
            {"source": "https://evil/pioreactor_relay-1.0-py3-none-any.whl"},
            {
                "source": "git+ssh://git@github.com/x/pioreactor_relay-1.0-py3-none-any.whl"
            },
            {"source": "--pre"},
            {"source": "wheels/pioreactor_relay.tar.gz"},
            {"source": "wheels/other-1.0-py3-none-any.whl"},
            {"source": ["wheels/pioreactor_relay-1.0-py3-none-any.whl"]},
        ]:
            await self.call(
                "/unit_api/plugins/install",
                400,
                {"args": ["pioreactor-relay"], "options": options},
            )
        for source in [
            "../pioreactor_relay-1.0-py3-none-any.whl",
            str(self.root.parent / "pioreactor_relay-1.0-py3-none-any.whl"),
        ]:
            await self.call(
                "/unit_api/plugins/install",
                403,
                {"args": ["pioreactor-relay"], "options": {"source": source}},
            )
        (self.root / "wheels" / "pioreactor_relay-1.0-py3-none-any.whl").symlink_to(
            self.root.parent / "pioreactor_relay-1.0-py3-none-any.whl"
        )
        await self.call(
            "/unit_api/plugins/install",
            403,
            {
                "args": ["pioreactor-relay"],
                "options": {"source": "wheels/pioreactor_relay-1.0-py3-none-any.whl"},
            },
        )
        await self.call(
            "/unit_api/plugins/install",
            404,
            {
                "args": ["pioreactor-relay"],
                "options": {"source": "wheels/pioreactor_relay-2.0-py3-none-any.whl"},
            },
        )
        self.assertFalse(self.record.exists())

    async def test_the_allow_list_and_the_kill_switch_answer_403(self) -> None:
        self.serve(allowed=frozenset({"pioreactor-relay"}))
        answer = await self.call(
            "/unit_api/plugins/install", 403, {"args": ["pioreactor-air-bubbler"]}
        )
        self.assertIn("[plugins] allowed", answer["cause"])
        await self.call("/unit_api/plugins/uninstall", 403, {"args": ["requests"]})
        result = await self.result(
            await self.call(
                "/unit_api/plugins/install", 202, {"args": ["Pioreactor_Relay"]}
            )
        )
        self.assertEqual(result["result"], True)
        (self.root / "DISALLOW_UI_INSTALLS").touch()
        answer = await self.call(
            "/unit_api/plugins/install", 403, {"args": ["pioreactor-relay"]}
        )
        self.assertIn("DISALLOW_UI_INSTALLS", answer["cause"])
        await self.call(
            "/unit_api/plugins/uninstall", 403, {"args": ["pioreactor-relay"]}
        )

    async def test_a_failing_pip_fails_the_task_with_its_output(self) -> None:
        self.serve(pip=(*self.settings.pip[:-1], "1"))
        result = await self.result(
            await self.call(
                "/unit_api/plugins/install", 202, {"args": ["pioreactor-nope"]}
            )
        )
        self.assertEqual(result["status"], "failed")
        self.assertEqual(
            result["error"], "Installing pioreactor-nope failed with exit code 1."
        )
        self.assertIn("ERROR: No matching distribution found", result["cause"])
        self.assertEqual(self.registry.reloads, 1)

    async def test_a_pip_that_cannot_start_fails_the_task(self) -> None:
        self.serve(pip=("/nonexistent/pip",))
        result = await self.result(
            await self.call("/unit_api/plugins/uninstall", 202, {"args": ["x"]})
        )
        self.assertEqual(result["status"], "failed")
        self.assertIn("could not start pip", result["error"])

    async def test_one_pip_at_a_time(self) -> None:
        first = await self.call("/unit_api/plugins/install", 202, {"args": ["a"]})
        busy = await self.call("/unit_api/plugins/uninstall", 202, {"args": ["b"]})
        self.assertEqual((busy["status"], busy["lock"]), ("running", "plugins-lock"))
        await self.result(first)
        self.assertEqual(self.pip_argv(), ["install", "--no-input", "--upgrade", "a"])

    async def test_installed_lists_plugin_distributions(self) -> None:
        dist_info(
            self.site,
            "pioreactor-air-bubbler",
            "0.4.0",
            "Summary: Bubbles air\nHome-page: https://example.org/bubbler\nAuthor: Cam\n",
        )
        dist_info(
            self.site,
            "lab-jobs",
            "1.2",
            "Project-URL: Homepage, https://example.org/lab\nAuthor-email: lab@example.org\n",
            ("lab_jobs/__init__.py", "twisted/plugins/lab_jobs.py"),
        )
        dist_info(
            self.site,
            "requests",
            "2.32.0",
            "Summary: HTTP\n",
            ("requests/__init__.py",),
        )
        dist_info(
            self.site,
            "pioreactor-appliance",
            "1.0",
            "",
            ("twisted/plugins/pioreactor_jobs.py",),
        )
        dist_info(self.site, "Twisted", "26.0", "", ("twisted/plugins/twisted_web.py",))
        code, answer = await request(self.stub, "GET", "/unit_api/plugins/installed")
        self.assertEqual(code, 200)
        self.assertEqual(
            answer,
            [
                {
                    "name": "lab-jobs",
                    "version": "1.2",
                    "description": "Unknown",
                    "homepage": "https://example.org/lab",
                    "source": "entry_points",
                    "author": "lab@example.org",
                },
                {
                    "name": "pioreactor-air-bubbler",
                    "version": "0.4.0",
                    "description": "Bubbles air",
                    "homepage": "https://example.org/bubbler",
                    "source": "entry_points",
                    "author": "Cam",
                },
            ],
        )

    async def test_installed_file_plugin_source(self) -> None:
        (self.root / "plugins").mkdir()
        (self.root / "plugins" / "my_plugin.py").write_text(
            "__plugin_name__ = 'mine'\n"
        )
        (self.root / "plugins" / "notes.txt").write_text("x")
        response = await response_of(
            self.stub, "GET", "/unit_api/plugins/installed/my_plugin.py"
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain"]
        )
        self.assertEqual(await response.content(), b"__plugin_name__ = 'mine'\n")
        for name, expect in [
            ("notes.txt", 404),
            ("missing.py", 404),
            ("..%2F..%2Fetc%2Fpasswd", 404),
        ]:
            code, answer = await request(
                self.stub, "GET", f"/unit_api/plugins/installed/{name}"
            )
            self.assertEqual(code, expect, answer)
            if name != "..%2F..%2Fetc%2Fpasswd":  # the router's 404: no such route
                self.assertEqual(answer["error"], "must provide a .py file")
        (self.root / "plugins" / "escape.py").symlink_to(self.root.parent / "pip.py")
        code, _ = await request(
            self.stub, "GET", "/unit_api/plugins/installed/escape.py"
        )
        self.assertEqual(code, 403)


class SettingsTests(SynchronousTestCase):
    def test_the_default_pip_is_this_python(self) -> None:
        settings = PluginSettings.from_config(Config.defaults())
        self.assertEqual(settings.pip, (sys.executable, "-m", "pip"))
        self.assertEqual(settings.allowed, frozenset())

    def test_the_allow_list_is_normalised(self) -> None:
        config = Config.defaults().with_overrides(
            [("plugins", "allowed", "Pioreactor_Relay, lab.jobs")]
        )
        self.assertEqual(
            PluginSettings.from_config(config).allowed,
            frozenset({"pioreactor-relay", "lab-jobs"}),
        )

    def test_bad_settings_are_refused(self) -> None:
        for key, value in [
            ("pip", ""),
            ("pip", "pip 'unclosed"),
            ("allowed", "ok, x; rm"),
            ("timeout_seconds", "long"),
        ]:
            config = Config.defaults().with_overrides([("plugins", key, value)])
            self.assertRaises(ConfigError, PluginSettings.from_config, config)

    def test_installed_ignores_the_real_environment_when_given_a_path(self) -> None:
        self.assertEqual(installed_plugins([self.mktemp()]), [])
