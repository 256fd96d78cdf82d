"""``/unit_api/jobs...`` in memory: toy jobs on a JobManager over the FakeBroker, a Clock for time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.descriptors import Descriptors
from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.hardware.hat import Hat
from pioreactor_appliance.hardware.unit import model_of
from pioreactor_appliance.jobs.base import Job
from pioreactor_appliance.jobs.bioreactor import Bioreactor
from pioreactor_appliance.jobs.pumps import AddMedia
from pioreactor_appliance.jobs.unit_state import PersistentCache
from pioreactor_appliance.resources.jobs import JobsApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import request
from ..jobs.toys import Counter, NeverStarts, toy_manager


class Forever(Job):
    """A long-running job, as the monitor is."""

    job_name = "forever"
    is_long_running = True


class FakeI2c:
    """A hardware connection whose bus answers at ``present`` addresses only."""

    def __init__(self, present: set[int]) -> None:
        self.present = present
        self.opened: list[int] = []
        self.closed: list[int] = []

    def i2c_open(self, bus: int, address: int) -> int:
        self.opened.append(address)
        return address

    def i2c_read_i2c_block_data(
        self, handle: int, register: int, count: int
    ) -> tuple[int, bytes]:
        if handle not in self.present:
            raise OSError("I2C read failed")
        return count, bytes(count)

    def i2c_close(self, handle: int) -> None:
        self.closed.append(handle)

    def call(self, action: Any) -> Deferred[Any]:
        return succeed(action(self))


class JobsApiTestCase(TestCase):
    def setUp(self) -> None:
        self.manager, self.broker, self.clock = toy_manager(
            self, Counter, NeverStarts, Forever, AddMedia
        )
        self.addCleanup(self.manager.stopService)
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.tasks = TaskRegistry(self.clock, "pio1", max_count=50, max_age=600)
        self.lookups: list[str] = []
        self.assignment: dict[str, Any] | Exception = {
            "pioreactor_unit": "pio1",
            "experiment": "assigned_exp",
            "is_active": 1,
        }
        cache = PersistentCache(self.data_dir / "cache.json", reactor)
        self.addCleanup(cache.close)
        config = Config.defaults()
        self.i2c = FakeI2c({0x2C, 0x4F, 0x48, 0x49})
        self.api = JobsApi(
            self.manager,
            self.tasks,
            self.broker.client("api"),
            Bioreactor(cache, config, model_of(config), "pio1"),
            self.clock,
            Descriptors(self.data_dir),
            "pio1",
            self.i2c,
            Hat.from_config(config),
            self.lookup,
        )
        self.stub = StubTreq(Router([self.api]))

    def lookup(self) -> Deferred[dict[str, Any]]:
        self.lookups.append("asked")
        if isinstance(self.assignment, Exception):
            return fail(self.assignment)
        return succeed(self.assignment)

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        code, body = await request(self.stub, method, path, **kwargs)
        self.assertEqual(code, expect, body)
        return body

    async def result(self, accepted: dict[str, Any]) -> dict[str, Any]:
        """Run the task a 202 names to its end: its task_results body."""
        self.assertEqual(accepted["status"], "pending")
        task = self.tasks.get(accepted["task_id"])
        self.clock.advance(0)
        assert task.deferred is not None
        await task.deferred
        return task.body()

    async def run_job(
        self, job: str = "counter", expect_status: str = "succeeded", **body: Any
    ) -> dict[str, Any]:
        body.setdefault("env", {"EXPERIMENT": "exp1"})
        outcome = await self.result(
            await self.call(
                "POST", f"/unit_api/jobs/run/job_name/{job}", 202, json=body
            )
        )
        self.assertEqual(outcome["status"], expect_status, outcome)
        return outcome


class RunTests(JobsApiTestCase):
    async def test_a_run_starts_the_job_and_succeeds_once_it_is_ready(self) -> None:
        outcome = await self.run_job(
            options={"interval": 2, "label": "x"},
            env={"EXPERIMENT": "exp1", "JOB_SOURCE": "experiment_profile"},
        )
        self.assertEqual(outcome["result"], {"ok": True})
        [row] = await self.call("GET", "/unit_api/jobs/running", 200)
        self.assertEqual(
            (row["job_name"], row["experiment"], row["job_source"], row["is_running"]),
            ("counter", "exp1", "experiment_profile", 1),
        )
        self.assertEqual(
            self.broker.value("pioreactor/pio1/exp1/counter/$state"), b"ready"
        )
        self.assertEqual(
            self.broker.value("pioreactor/pio1/exp1/counter/interval"), b"2.0"
        )
        self.assertEqual(self.lookups, [])

    async def test_unknown_job_is_404_naming_it_and_the_known_jobs(self) -> None:
        body = await self.call(
            "POST", "/unit_api/jobs/run/job_name/stiring", 404, json={}
        )
        self.assertIn("stiring", body["error"])
        self.assertIn("counter", body["cause"])
        self.assertIn("dosing_automation", body["cause"])

    async def test_bad_options_and_args_are_400_naming_them(self) -> None:
        for sent, mention in [
            ({"options": {"interval": "soon"}}, "interval"),
            ({"options": {"interval": 0.01}}, "below the minimum"),
            ({"options": {"speed": 3}}, "speed"),
            ({"args": ["x"]}, "takes no arguments"),
        ]:
            body = await self.call(
                "PATCH", "/unit_api/jobs/run/job_name/counter", 400, json=sent
            )
            self.assertIn(mention, body["cause"])
        self.assertEqual(self.manager.running_jobs(), [])

    async def test_a_dose_that_would_fill_the_vial_to_its_threshold_is_400(self) -> None:
        path = "/unit_api/jobs/run/job_name/add_media"
        env = {"EXPERIMENT": "exp1"}
        # The default 40 ml model's threshold is 36 ml; the vial starts at 14 ml.
        body = await self.call("POST", path, 400, json={"options": {"ml": 22}, "env": env})
        self.assertEqual(body["error"], "Requested dose would meet or exceed the reactor safety threshold.")
        self.assertIn("14 ml in the vial plus 22 ml", body["cause"])
        small = {"pioreactor_unit": "pio1", "MODEL_NAME": "pioreactor_20ml", "MODEL_VERSION": "1.5"}
        await self.call("POST", path, 400, json={"options": {"ml": 4}, "env": {**env, **small}})  # 14 + 4 >= 18
        body = await self.call("POST", path, 400, json={"options": {"ml": 1}, "env": {**env, "MODEL_NAME": "pioreactor_5l", "MODEL_VERSION": "9"}})
        self.assertEqual(body["error"], "Unknown Pioreactor model.")
        await self.call("POST", path, 202, json={"options": {"ml": 3.9}, "env": {**env, **small}})

    async def test_bodies_are_strict(self) -> None:
        for sent, mention in [
            ({"env": {"EXPERIMENT": 3}}, "env"),
            ({"config_overrides": [["a", "b"]]}, "[section, key, value]"),
            ({"option": {}}, "option"),
            ({"args": "x"}, "args"),
        ]:
            body = await self.call(
                "POST", "/unit_api/jobs/run/job_name/counter", 400, json=sent
            )
            self.assertEqual(body["error"], "Invalid request body.")
            self.assertIn(mention, body["cause"])

    async def test_a_second_run_within_a_second_is_429_then_an_already_running_job_fails_its_task(
        self,
    ) -> None:
        await self.run_job()
        response = await self.stub.post(
            "http://pio1/unit_api/jobs/run/job_name/counter", json={}
        )
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.clock.advance(1.5)
        outcome = await self.run_job(expect_status="failed")
        self.assertIn("already running", outcome["error"])
        self.assertEqual(len(self.manager.running_jobs()), 1)

    async def test_a_job_that_fails_to_start_fails_its_task_with_the_reason(
        self,
    ) -> None:
        outcome = await self.run_job("never_starts", expect_status="failed")
        self.assertIn("no sensor at 0x4F", outcome["error"])
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.manager.running_jobs(), [])

    async def test_config_overrides_reach_the_job(self) -> None:
        await self.run_job(config_overrides=[["counter.config", "colour", "blue"]])
        self.assertEqual(
            self.manager.get("counter").config.get("counter.config", "colour"), "blue"
        )

    async def test_without_experiment_the_leader_is_asked(self) -> None:
        await self.run_job(env={})
        self.assertEqual(self.lookups, ["asked"])
        self.assertEqual(self.manager.running_jobs()[0].experiment, "assigned_exp")

    async def test_when_the_leader_cannot_say_the_task_fails_clearly(self) -> None:
        self.assignment = ApiError(
            500,
            "The leader did not say which experiment pio1 is assigned to: unreachable",
        )
        outcome = await self.run_job(env={}, expect_status="failed")
        self.assertIn("did not say which experiment", outcome["error"])
        self.clock.advance(2)
        self.assignment = {
            "pioreactor_unit": "pio1",
            "experiment": None,
            "is_active": 1,
        }
        outcome = await self.run_job(env={}, expect_status="failed")
        self.assertIn("No experiment", outcome["error"])
        self.assertEqual(self.manager.running_jobs(), [])

    async def test_an_inactive_unit_refuses_to_run(self) -> None:
        outcome = await self.run_job(
            env={"EXPERIMENT": "exp1", "ACTIVE": "0"}, expect_status="failed"
        )
        self.assertEqual(outcome["error"], "unit is inactive")
        self.clock.advance(2)
        self.assignment = {
            "pioreactor_unit": "pio1",
            "experiment": "exp1",
            "is_active": 0,
        }
        outcome = await self.run_job(env={}, expect_status="failed")
        self.assertEqual(outcome["error"], "unit is inactive")
        self.assertEqual(self.manager.running_jobs(), [])

    async def test_long_running_jobs_run_in_the_experiment_dollar_experiment_without_asking(
        self,
    ) -> None:
        await self.run_job("forever", env={})
        self.assertEqual(self.lookups, [])
        [row] = await self.call("GET", "/unit_api/long_running_jobs/running", 200)
        self.assertEqual(
            (row["job_name"], row["experiment"], row["is_long_running_job"]),
            ("forever", "$experiment", 1),
        )


class StopAndListTests(JobsApiTestCase):
    async def test_stop_needs_a_filter(self) -> None:
        for sent in [{}, {"job_name": "", "experiment": None}]:
            body = await self.call("POST", "/unit_api/jobs/stop", 400, json=sent)
            self.assertEqual(body["error"], "No job filter specified")
            self.assertIn("remediation", body)
        body = await self.call("POST", "/unit_api/jobs/stop", 400, json={"job_id": "1"})
        self.assertIn("job_id", body["cause"])

    async def test_stop_by_filter_and_stop_all_keep_the_long_running_jobs(self) -> None:
        await self.run_job()
        await self.run_job("forever")
        outcome = await self.result(
            await self.call(
                "POST", "/unit_api/jobs/stop", 202, json={"experiment": "other"}
            )
        )
        self.assertEqual(outcome["result"], True)
        self.assertEqual(len(self.manager.running_jobs()), 2)
        outcome = await self.result(
            await self.call("PATCH", "/unit_api/jobs/stop/all", 202)
        )
        self.assertEqual(outcome["result"], True)
        self.assertEqual([r.job_name for r in self.manager.running_jobs()], ["forever"])
        self.assertEqual(
            self.broker.value("pioreactor/pio1/exp1/counter/$state"), b"disconnected"
        )
        await self.result(
            await self.call(
                "POST", "/unit_api/jobs/stop", 202, json={"job_name": "forever"}
            )
        )
        self.assertEqual(self.manager.running_jobs(), [])

    async def test_the_lists_have_the_reference_shapes(self) -> None:
        await self.run_job()
        self.clock.advance(2)
        await self.run_job("forever")
        await self.result(
            await self.call(
                "POST", "/unit_api/jobs/stop", 202, json={"job_name": "counter"}
            )
        )
        history = await self.call("GET", "/unit_api/jobs", 200)
        self.assertEqual([r["job_name"] for r in history], ["forever", "counter"])
        self.assertEqual(
            list(history[1]),
            [
                "job_id",
                "job_name",
                "experiment",
                "job_source",
                "unit",
                "started_at",
                "ended_at",
            ],
        )
        self.assertIsNotNone(history[1]["ended_at"])
        self.assertEqual(
            await self.call("GET", "/unit_api/jobs/running/counter", 200), []
        )
        [row] = await self.call("GET", "/unit_api/jobs/running/forever", 200)
        self.assertEqual(len(row), 11)
        self.assertEqual(
            await self.call("GET", "/unit_api/jobs/running/experiments/exp1", 200), []
        )
        self.assertEqual(
            len(
                await self.call(
                    "GET", "/unit_api/jobs/running/experiments/$experiment", 200
                )
            ),
            1,
        )


class SettingsTests(JobsApiTestCase):
    async def test_settings_are_shaped_as_the_reference_table_holds_them(self) -> None:
        await self.run_job(options={"interval": 3})
        job = self.manager.get("counter")
        job.publish("label", {"a": 1})
        body = await self.call("GET", "/unit_api/jobs/settings/job_name/counter", 200)
        self.assertEqual(
            body,
            {
                "settings": {
                    "$state": "ready",
                    "count": 0,
                    "interval": 3.0,
                    "label": '{"a":1}',
                    "kept": "yes",
                }
            },
        )
        job.publish("kept", True)
        self.assertEqual(
            await self.call(
                "GET", "/unit_api/jobs/settings/job_name/counter/setting/kept", 200
            ),
            {"kept": 1},
        )
        self.assertEqual(
            await self.call(
                "GET", "/unit_api/jobs/settings/job_name/counter/setting/$state", 200
            ),
            {"$state": "ready"},
        )

    async def test_missing_job_or_setting_is_404(self) -> None:
        body = await self.call("GET", "/unit_api/jobs/settings/job_name/counter", 404)
        self.assertEqual(body["error"], "No settings found for job.")
        await self.run_job()
        body = await self.call(
            "GET", "/unit_api/jobs/settings/job_name/counter/setting/speed", 404
        )
        self.assertEqual(body["error"], "Setting not found.")
        await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/stirring",
            404,
            json={"settings": {"x": 1}},
        )

    async def test_patch_really_changes_the_running_job(self) -> None:
        await self.run_job(options={"interval": 5})
        body = await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/counter",
            200,
            json={"settings": {"interval": "1", "label": "blue"}},
        )
        self.assertEqual(
            (body["settings"]["interval"], body["settings"]["label"]), (1.0, "blue")
        )
        self.assertEqual(
            self.broker.value("pioreactor/pio1/exp1/counter/label"), b"blue"
        )
        self.clock.pump([0.5] * 7)  # the set_interval hook restarted the loop at 1 s
        self.assertEqual(self.manager.get("counter").count, 3)
        body = await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/counter",
            200,
            json={"settings": {"$state": "sleeping"}},
        )
        self.assertEqual(body["settings"]["$state"], "sleeping")

    async def test_patch_refuses_read_only_unknown_and_uncastable_values_before_changing_anything(
        self,
    ) -> None:
        await self.run_job()
        for settings, mention in [
            ({"label": "new", "count": 7}, "read-only setting 'count'"),
            ({"label": "new", "speed": 7}, "no setting 'speed'"),
            ({"label": "new", "interval": "soon"}, "not a number"),
            ({"label": "new", "interval": {"a": 1}}, "interval is a float"),
            ({"label": "new", "$state": "lost"}, "$state takes"),
        ]:
            body = await self.call(
                "PATCH",
                "/unit_api/jobs/settings/job_name/counter",
                400,
                json={"settings": settings},
            )
            self.assertIn(mention, body["cause"])
        self.assertEqual(self.manager.get("counter").values["label"], "plain")
        await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/counter",
            400,
            json={"settings": {}},
        )
        await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/counter",
            400,
            json={"setting": {"label": "x"}},
        )

    async def test_a_value_the_job_itself_refuses_is_a_400_naming_what_did_apply(self) -> None:
        await self.run_job()
        body = await self.call(
            "PATCH",
            "/unit_api/jobs/settings/job_name/counter",
            400,
            json={"settings": {"label": "kept", "interval": -1}},
        )
        self.assertIn("interval=-1.0: the interval must be positive", body["error"])
        self.assertIn("applied: label", body["cause"])
        self.assertEqual(self.manager.get("counter").values["interval"], 5.0)


class DescriptorTests(JobsApiTestCase):
    async def test_the_shipped_descriptors_are_valid_and_complete(self) -> None:
        jobs = await self.call("GET", "/unit_api/jobs/descriptors", 200)
        self.assertEqual(
            sorted(d["job_name"] for d in jobs),
            [
                "dosing_automation",
                "growth_rate_calculating",
                "led_automation",
                "monitor",
                "od_reading",
                "stirring",
                "temperature_automation",
            ],
        )
        stirring = next(d for d in jobs if d["job_name"] == "stirring")
        self.assertEqual(
            list(stirring),
            [
                "display_name",
                "job_name",
                "display",
                "published_settings",
                "source",
                "description",
                "subtext",
                "is_testing",
            ],
        )
        self.assertIn(
            "measured_rpm", [s["key"] for s in stirring["published_settings"]]
        )
        expected = {
            "temperature": ["only_record_temperature", "thermostat"],
            "dosing": ["chemostat", "fed_batch", "silent", "turbidostat"],
            "led": ["light_dark_cycle", "silent"],
        }
        for automation_type, names in expected.items():
            found = await self.call(
                "GET", f"/unit_api/automations/descriptors/{automation_type}", 200
            )
            self.assertEqual(sorted(d["automation_name"] for d in found), names)
        fed_batch = next(
            d
            for d in await self.call(
                "GET", "/unit_api/automations/descriptors/dosing", 200
            )
            if d["automation_name"] == "fed_batch"
        )
        self.assertEqual(
            [f["key"] for f in fed_batch["fields"]], ["volume", "duration"]
        )
        body = await self.call("GET", "/unit_api/automations/descriptors/pumps", 400)
        self.assertEqual(body["error"], "Not a valid automation type")

    async def test_later_files_win_and_invalid_ones_are_skipped(self) -> None:
        own = self.data_dir / "ui" / "jobs"
        plugins = self.data_dir / "plugins" / "ui" / "jobs"
        own.mkdir(parents=True)
        plugins.mkdir(parents=True)
        (own / "stirring.yaml").write_text(
            "display_name: Mixing\njob_name: stirring\ndisplay: true\n"
        )
        (plugins / "a_stirring.yaml").write_text(
            "display_name: Plugin mixing\njob_name: stirring\ndisplay: false\n"
        )
        (plugins / "bad.yaml").write_text(
            "display_name: Bad\njob_name: bad\ndisplay: true\nextra: 1\n"
        )
        (plugins / "unlabelled.yaml").write_text(
            "display_name: U\njob_name: u\ndisplay: true\npublished_settings:\n  - {key: a, type: numeric, display: true}\n"
        )
        (plugins / "backwards.yaml").write_text(
            "display_name: B\njob_name: b\ndisplay: true\npublished_settings:\n  - {key: a, type: numeric, display: false, min: 2, max: 1}\n"
        )
        (plugins / "broken.yml").write_text("display_name: [\n")
        (plugins / "mine.yml").write_text(
            "display_name: Mine\njob_name: mine\ndisplay: true\n"
        )
        jobs = await self.call("GET", "/unit_api/jobs/descriptors", 200)
        names = [d["job_name"] for d in jobs]
        self.assertEqual(
            (
                names.count("stirring"),
                "bad" in names,
                "u" in names,
                "b" in names,
                "mine" in names,
            ),
            (1, False, False, False, True),
        )
        stirring = next(d for d in jobs if d["job_name"] == "stirring")
        self.assertEqual(
            (
                stirring["display_name"],
                stirring["published_settings"],
                stirring["source"],
            ),
            ("Plugin mixing", [], None),
        )
        select = self.data_dir / "plugins" / "ui" / "automations" / "led"
        select.mkdir(parents=True)
        (select / "x.yaml").write_text(
            "display_name: X\nautomation_name: x\nfields:\n  - {key: k, label: K, type: select}\n"
        )
        (select / "y.yaml").write_text(
            "display_name: Y\nautomation_name: y\nfields:\n  - {key: k, label: K, type: select, options: [a]}\n"
        )
        leds = [
            d["automation_name"]
            for d in await self.call(
                "GET", "/unit_api/automations/descriptors/led", 200
            )
        ]
        self.assertEqual(leds, ["light_dark_cycle", "silent", "y"])

    async def test_capabilities_come_from_the_registry(self) -> None:
        found = await self.call("GET", "/unit_api/capabilities", 200)
        self.assertEqual(
            [c["job_name"] for c in found], ["add_media", "counter", "forever", "never_starts"]
        )
        counter = found[1]
        self.assertEqual(counter["cli_example"], "pio run counter [OPTIONS]")
        self.assertEqual(
            counter["options"][0],
            {
                "name": "interval",
                "long_flag": "interval",
                "help": "",
                "required": False,
                "multiple": False,
                "default": 5.0,
                "type": "float range",
            },
        )
        self.assertEqual(
            counter["published_settings"]["interval"],
            {"datatype": "float", "settable": True, "unit": "s"},
        )
        self.assertEqual(
            counter["published_settings"]["$state"],
            {"datatype": "string", "settable": True},
        )
        self.assertEqual(counter["arguments"], [])


class BioreactorAndHardwareTests(JobsApiTestCase):
    async def test_bioreactor_values_are_read_and_changed_whole(self) -> None:
        body = await self.call("GET", "/unit_api/bioreactor/experiments/exp1", 200)
        self.assertEqual(body["values"]["current_volume_ml"], 14.0)
        self.assertEqual(len(body["values"]), 6)
        body = await self.call(
            "PATCH",
            "/unit_api/bioreactor/experiments/exp1",
            200,
            json={"values": {"current_volume_ml": 12.5}},
        )
        self.assertEqual(body, {"status": "success"})
        self.assertEqual(
            self.broker.value("pioreactor/pio1/exp1/bioreactor/current_volume_ml"),
            b"12.5",
        )
        for values, mention in [
            ({}, "Missing bioreactor values."),
            ({"alt_media_fraction": 0.5, "current_volume_ml": 99}, "<= 40"),
            ({"volume": 1}, "volume"),
        ]:
            body = await self.call(
                "PATCH",
                "/unit_api/bioreactor/experiments/exp1",
                400,
                json={"values": values},
            )
            self.assertIn(mention, f"{body['error']} {body['cause']}")
        self.assertEqual(
            (await self.call("GET", "/unit_api/bioreactor/experiments/exp1", 200))[
                "values"
            ]["alt_media_fraction"],
            0.0,
        )

    async def test_hardware_check(self) -> None:
        body = await self.call(
            "POST",
            "/unit_api/hardware/check",
            400,
            json={"model_name": "pioreactor_20ml", "model_version": "9.9"},
        )
        self.assertEqual(
            body["error"], "Model name or version not found in available models."
        )
        await self.call(
            "POST",
            "/unit_api/hardware/check",
            400,
            json={"model_name": "pioreactor_20ml"},
        )
        check = {"model_name": "pioreactor_40ml", "model_version": "1.5"}
        outcome = await self.result(
            await self.call("POST", "/unit_api/hardware/check", 202, json=check)
        )
        self.assertEqual(outcome["result"], {"status": "ok"})
        self.assertEqual(sorted(self.i2c.opened), sorted(self.i2c.closed))
        self.i2c.present.discard(0x48)
        outcome = await self.result(
            await self.call("PATCH", "/unit_api/hardware/check", 202, json=check)
        )
        self.assertEqual(
            outcome["result"],
            {"status": "warning", "reason": "missing I2C devices at 0x48"},
        )
        outcome = await self.result(
            await self.call(
                "PATCH",
                "/unit_api/hardware/check",
                202,
                json={"model_name": "pioreactor_20ml", "model_version": "1.1"},
            )
        )
        self.assertEqual(outcome["result"], {"status": "ok"})
