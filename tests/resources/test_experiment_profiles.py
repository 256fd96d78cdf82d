"""``/api/experiment_profiles``: saving, listing, reading and deleting profiles; what runs and ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor

from pioreactor_appliance.config import Config
from pioreactor_appliance.experiment_profiles import MAX_PROFILE_BYTES
from pioreactor_appliance.jobs.context import LeaderServices
from pioreactor_appliance.jobs.experiment_profile import ExperimentProfile
from pioreactor_appliance.jobs.manager import JobManager, RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.unit_state import PersistentCache, UnitState
from pioreactor_appliance.resources.experiment_profiles import ExperimentProfilesApi

from ..helpers import LeaderApiTestCase, response_of
from ..jobs.broker import FakeBroker

GOOD = """experiment_profile_name: demo
metadata:
  author: Cam
common:
  jobs:
    stirring:
      actions:
        - type: start
          t: 1m
          options:
            target_rpm: 400
"""
PROFILES = "/api/experiment_profiles"


class ProfilesTestCase(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp()).resolve()
        self.data_dir.mkdir()
        cache = PersistentCache(self.data_dir / "storage" / "local_cache.json", reactor)
        self.addCleanup(cache.close)
        self.broker = FakeBroker()
        self.manager = JobManager(
            Registry({"experiment_profile": ExperimentProfile}),
            self.clock,
            "leader",
            "leader",
            Config.defaults(),
            None,
            UnitState(cache),
            self.data_dir,
            self.broker.connect,
            leader_services=LeaderServices(self.fanout, self.db),
        )
        self.manager.startService()
        self.addCleanup(self.manager.stopService)
        return [ExperimentProfilesApi(self.data_dir, self.db, self.manager)]

    async def setUp(self) -> None:
        await self.start()

    @property
    def folder(self) -> Path:
        return self.data_dir / "experiment_profiles"


class CrudTests(ProfilesTestCase):
    async def test_create_read_list_update_delete(self) -> None:
        self.assertEqual(await self.call("GET", PROFILES, expect=200), [])
        self.assertEqual(await self.call("POST", PROFILES, expect=200, json={"filename": "../../elsewhere/demo.yaml", "body": GOOD}), {"status": "success"})
        self.assertEqual((self.folder / "demo.yaml").read_text(), GOOD, "only the basename is used")
        response = await response_of(self.stub, "GET", f"{PROFILES}/demo.yaml")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertEqual((await response.content()).decode(), GOOD)

        (self.folder / "empty.yml").write_text("")
        (self.folder / "broken.yaml").write_text("experiment_profile_name: [")
        (self.folder / "notes.txt").write_text("experiment_profile_name: x\n")
        os.utime(self.folder / "empty.yml", (1, 1))
        listing = await self.call("GET", PROFILES, expect=200)
        self.assertEqual([item["file"] for item in listing], ["demo.yaml", "empty.yml"], "newest first; unparseable and non-YAML files left out")
        self.assertEqual(listing[0]["fullpath"], str(self.folder / "demo.yaml"))
        self.assertEqual(
            listing[0]["experimentProfile"],
            {
                "experiment_profile_name": "demo",
                "metadata": {"author": "Cam"},
                "plugins": [],
                "inputs": {},
                "common": {"jobs": {"stirring": {"actions": [{"type": "start", "t": "1m", "options": {"target_rpm": 400}}]}}},
                "pioreactors": {},
            },
        )
        self.assertEqual(listing[1]["experimentProfile"]["experiment_profile_name"], "temporary name: empty")

        changed = GOOD.replace("demo", "renamed")
        self.assertEqual(await self.call("PATCH", f"{PROFILES}/demo.yaml", expect=200, json={"body": changed}), {"status": "success"})
        self.assertEqual((self.folder / "demo.yaml").read_text(), changed)
        await self.call("PATCH", f"{PROFILES}/new one.yml", expect=200, json={"body": GOOD})
        self.assertTrue((self.folder / "new one.yml").exists(), "PATCH creates too")
        self.assertEqual(await self.call("DELETE", f"{PROFILES}/demo.yaml", expect=200), {"status": "success"})
        self.assertFalse((self.folder / "demo.yaml").exists())
        await self.error("DELETE", f"{PROFILES}/demo.yaml", 404, "demo.yaml")
        await self.error("GET", f"{PROFILES}/demo.yaml", 404, "demo.yaml")
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), ["broken.yaml", "empty.yml", "new one.yml", "notes.txt"], "no temporary files left")

    async def test_a_profile_with_expressions_is_saved_and_listed_as_written(self) -> None:
        body = GOOD.replace("400", "${{ rpm * 2 }}").replace("t: 1m", "t: 1m\n          if: ${{ ::stirring:$state != ready }}") + "inputs:\n  rpm: 200\n"
        await self.call("POST", PROFILES, expect=200, json={"filename": "demo.yaml", "body": body})
        [listed] = await self.call("GET", PROFILES, expect=200)
        [action] = listed["experimentProfile"]["common"]["jobs"]["stirring"]["actions"]
        self.assertEqual(action, {"type": "start", "t": "1m", "if": "${{ ::stirring:$state != ready }}", "options": {"target_rpm": "${{ rpm * 2 }}"}})
        self.assertEqual(listed["experimentProfile"]["inputs"], {"rpm": 200})

    async def test_an_existing_name_is_not_overwritten_by_post(self) -> None:
        await self.call("POST", PROFILES, expect=200, json={"filename": "demo.yaml", "body": GOOD})
        await self.error("POST", PROFILES, 400, "already exists", json={"filename": "demo.yaml", "body": GOOD.replace("demo", "other")})
        self.assertEqual((self.folder / "demo.yaml").read_text(), GOOD)


class BadInputTests(ProfilesTestCase):
    async def test_a_bad_profile_is_400_naming_its_line_and_field(self) -> None:
        for body, code, mentions in [
            ("experiment_profile_name: [", "yaml_syntax", ["line 1", "not valid YAML"]),
            ("experiment_profile_name: x\nmetadata:\n  author: a\n bad: b\n", "yaml_syntax", ["line 4", "not valid YAML"]),
            ("experiment_profile_name: x\x1a\ud800\n", "yaml_syntax", ["unacceptable character #x001a"]),
            (GOOD.replace("type: start", "type: strat"), "unknown_action", ["line 8", "common.jobs.stirring.actions[0].type", "unknown action 'strat'"]),
            (GOOD.replace("t: 1m", "t: soon"), "bad_time", ["line 9", "actions[0].t", "'soon' is not a time"]),
            (GOOD + "colour: blue\n", "unknown_field", ["line 12", "colour"]),
            (GOOD.replace("          options:", "          speed: 3\n          options:"), "unknown_field", ["line 10", "'speed'"]),
            ("metadata: {}\n", "missing_field", ["experiment_profile_name: experiment_profile_name is required"]),
            ("experiment_profile_name: x\nversion: 1.0\n", "wrong_type", ["line 2", "version", "expected text"]),
            ("experiment_profile_name: x\npioreactors:\n  10.0.0.2:\n    jobs: {}\n", "bad_name", ["line 4", "IP address"]),
            ("experiment_profile_name: x\nplugins:\n  - version: '1'\n", "missing_field", ["line 3", "plugins[0].name: name is required"]),
            ("experiment_profile_name: '${{ unit() }}'\n", "unsupported_expression", ["line 1", "allowed only in options, log messages, if"]),
            (GOOD.replace("Cam", "${{ unit() }}"), "unsupported_expression", ["line 3", "metadata.author"]),
            (GOOD.replace("400", "${{ 1 + }}"), "expression_syntax", ["line 11", "actions[0].options.target_rpm", "bad expression, column 9: expected a number"]),
            (GOOD.replace("t: 1m", "t: 1m\n          if: ${{ unit() == 'pio1' }}"), "expression_syntax", ["line 10", "actions[0].if", "column 15: unexpected character", "bare"]),
            (GOOD.replace("t: 1m", "if: maybe"), "wrong_type", ["line 9", "actions[0].if", "'maybe' is neither true nor false"]),
            (GOOD.replace("t: 1m", "if: ${{ 1 < 2 < 3 }}"), "expression_syntax", ["comparisons do not chain"]),
            (GOOD.replace("t: 1m", "if: ${{ " + "(" * 40 + "1" + ")" * 40 + " }}"), "expression_syntax", ["nests more than 32 deep"]),
            (GOOD + "inputs:\n  and: 3\n", "bad_name", ["line 13", "inputs.and", "not a keyword"]),
            (GOOD + "inputs:\n  rpm: ${{ 3 }}\n", "unsupported_expression", ["line 13", "inputs.rpm"]),
            ("experiment_profile_name: x\n" + "#" * MAX_PROFILE_BYTES, "too_large", [f"larger than {MAX_PROFILE_BYTES} bytes"]),
        ]:
            error = await self.error("POST", PROFILES, 400, "Validation error.", *mentions, json={"filename": "p.yaml", "body": body})
            [diagnostic] = error["diagnostics"]
            self.assertEqual((diagnostic["severity"], diagnostic["code"]), ("error", code), body)
            await self.error("PATCH", f"{PROFILES}/p.yaml", 400, *mentions, json={"body": body})
        self.assertFalse(self.folder.exists() and any(self.folder.iterdir()), "nothing was saved")

    async def test_bad_names_and_traversal_are_refused(self) -> None:
        for name in ("profile.txt", "no_suffix", ".hidden.yaml", "two  spaces.yaml", "semi;colon.yaml", "a" * 200 + ".yaml"):
            await self.error("POST", PROFILES, 400, "Invalid filename.", json={"filename": name, "body": GOOD})
        for name in ("..", "%2e%2e%2fconfig.ini", "..%2F..%2Fconfig.yaml", "%2e%2e.yaml"):
            body = await self.call("PATCH", f"{PROFILES}/{name}", json={"body": GOOD})
            self.assertIn(body["status"], (400, 404), name)
            body = await self.call("GET", f"{PROFILES}/{name}")
            self.assertIn(body["status"], (400, 404), name)
        await self.error("GET", f"{PROFILES}/config.ini", 404, "config.ini")
        await self.error("DELETE", f"{PROFILES}/config.ini", 404, "config.ini")
        outside = self.data_dir / "secret.yaml"
        outside.write_text(GOOD)
        self.folder.mkdir()
        (self.folder / "link.yaml").symlink_to(outside)
        await self.error("GET", f"{PROFILES}/link.yaml", 400, "leads outside")
        await self.error("PATCH", f"{PROFILES}/link.yaml", 400, "leads outside", json={"body": GOOD})
        self.assertEqual([item["file"] for item in await self.call("GET", PROFILES, expect=200)], [], "links are not listed")
        self.assertEqual(outside.read_text(), GOOD)

    async def test_bodies_are_strict(self) -> None:
        await self.error("POST", PROFILES, 400, "Invalid request body.", json={"filename": "p.yaml"})
        await self.error("POST", PROFILES, 400, "Invalid request body.", json={"filename": "p.yaml", "body": GOOD, "extra": 1})
        await self.error("PATCH", f"{PROFILES}/p.yaml", 400, "Invalid request body.", json={"body": 3})


class RunningAndRecentTests(ProfilesTestCase):
    async def test_running_and_recent_show_a_run_in_the_reference_shapes(self) -> None:
        await self.call("POST", "/api/experiments", expect=201, json={"experiment": "exp1"})
        await self.call("POST", PROFILES, expect=200, json={"filename": "demo.yaml", "body": GOOD})
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/experiment_profiles/running", expect=200), [])
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/experiment_profiles/recent", expect=200), [])
        listing = await self.call("GET", PROFILES, expect=200)
        await self.manager.run(RunRequest("experiment_profile", "exp1", args=["execute", listing[0]["fullpath"], "exp1"]))
        [running] = await self.call("GET", "/api/experiments/exp1/experiment_profiles/running", expect=200)
        self.assertEqual(
            running,
            {
                "job_name": "experiment_profile",
                "experiment": "exp1",
                "job_id": 1,
                "settings": {
                    "experiment_profile_name": "demo",
                    "start_time_utc": self.NOW_ISO,
                    "profile_filename": str(self.folder / "demo.yaml"),
                    "$state": "ready",
                },
            },
        )
        self.assertEqual(await self.call("GET", "/api/experiments/exp2/experiment_profiles/running", expect=200), [])
        self.assertEqual(
            await self.call("GET", "/api/experiments/exp1/experiment_profiles/recent", expect=200),
            [{"started_at": self.NOW_ISO, "experiment_profile_name": "demo", "experiment": "exp1"}],
        )
        response = await response_of(self.stub, "GET", "/api/experiments/exp1/experiment_profiles/recent")
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=5"])
        await self.manager.stop(job_name="experiment_profile")
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/experiment_profiles/running", expect=200), [])
