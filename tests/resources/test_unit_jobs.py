"""The leader's job routes: who each one reaches, what it sends them, and what it publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from pioreactor_appliance.descriptors import Descriptors
from pioreactor_appliance.resources.unit_jobs import UnitJobsApi

from ..fakes import FakeMqtt
from ..helpers import LeaderApiTestCase

RUN = "/api/{}/{}/jobs/run/job_name/stirring/experiments/{}"


@define
class MaybeSilent:
    """The fake broker, or, while ``silent``, a broker that takes messages and never acknowledges them."""

    mqtt: FakeMqtt
    silent: bool = False

    def publish(
        self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False
    ) -> Deferred[None]:
        return (
            Deferred()
            if self.silent
            else self.mqtt.publish(topic, payload, qos, retain)
        )


class UnitJobsTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        self.publisher = MaybeSilent(self.mqtt)
        return [
            UnitJobsApi(
                self.db,
                self.tasks,
                self.fanout,
                self.publisher,
                self.clock,
                Descriptors(data_dir),
                "leader",
            )
        ]

    async def setUp(self) -> None:
        await self.start()
        await self.call(
            "POST", "/api/experiments", expect=201, json={"experiment": "exp1"}
        )
        await self.call(
            "POST", "/api/experiments", expect=201, json={"experiment": "exp2"}
        )
        for unit, model in [
            ("pio1", {"model_name": "pioreactor_40ml", "model_version": "1.5"}),
            ("pio2", {}),
            ("pio3", {}),
        ]:
            await self.call(
                "PUT",
                "/api/workers",
                expect=201,
                json={"pioreactor_unit": unit, **model},
            )
        for unit, experiment in [("pio1", "exp1"), ("pio2", "exp1"), ("pio3", "exp2")]:
            await self.call(
                "PUT",
                f"/api/experiments/{experiment}/workers",
                expect=200,
                json={"pioreactor_unit": unit},
            )
        await self.call(
            "PUT", "/api/workers/pio2/is_active", expect=200, json={"is_active": 0}
        )
        self.fanout.calls.clear()
        self.mqtt.published.clear()

    async def run_on(
        self, family: str, unit: str, experiment: str, expect: int = 202, **body: Any
    ) -> Any:
        return await self.call(
            "POST", RUN.format(family, unit, experiment), expect=expect, json=body
        )

    async def test_broadcast_runs_on_the_active_workers_of_the_experiment_with_their_env(
        self,
    ) -> None:
        accepted = await self.run_on(
            "workers",
            "$broadcast",
            "exp1",
            options={"target_rpm": 400},
            env={"DEBUG": "1", "EXPERIMENT": "x"},
        )
        result = await self.finish_task(accepted)
        self.assertEqual(list(result["result"]), ["pio1"])
        [(method, units, path, sent)] = self.fanout.calls
        self.assertEqual(
            (method, units, path),
            ("POST", ["pio1"], "/unit_api/jobs/run/job_name/stirring"),
        )
        self.assertEqual(sent["options"], {"target_rpm": 400})
        self.assertEqual(
            sent["env"],
            {
                "DEBUG": "1",
                "EXPERIMENT": "exp1",
                "HOSTNAME": "pio1",
                "ACTIVE": "1",
                "TESTING": "0",
                "MODEL_NAME": "pioreactor_40ml",
                "MODEL_VERSION": "1.5",
            },
        )

    async def test_dollar_experiment_reaches_every_active_worker(self) -> None:
        await self.finish_task(await self.run_on("units", "$broadcast", "$experiment"))
        self.assertEqual(
            sorted(units[0] for _, units, _, _ in self.fanout.calls), ["pio1", "pio3"]
        )
        self.assertNotIn("MODEL_NAME", self.fanout.calls[-1][3]["env"])

    async def test_a_named_unit_must_be_active_and_assigned(self) -> None:
        await self.finish_task(await self.run_on("units", "pio1", "exp1"))
        for unit, experiment, mention in [
            ("pio2", "exp1", "pio2"),
            ("pio3", "exp1", "pio3"),
            ("nobody", "exp1", "nobody"),
            ("$broadcast", "empty", "No active workers"),
        ]:
            body = await self.run_on("units", unit, experiment, expect=404)
            self.assertIn(mention, body["error"])
        self.assertEqual(len(self.fanout.calls), 1)

    async def test_the_run_body_is_strict(self) -> None:
        body = await self.run_on("workers", "pio1", "exp1", expect=400, env={"A": 1})
        self.assertIn("env", body["cause"])
        code_body = await self.call(
            "POST", RUN.format("units", "pio1", "exp1"), expect=400, json={"extra": 1}
        )
        self.assertIn("extra", code_body["cause"])
        self.assertEqual(self.fanout.calls, [])

    async def test_stop_by_experiment_reaches_the_cluster(self) -> None:
        body = await self.call(
            "POST", "/api/units/$broadcast/jobs/stop/experiments/exp1", expect=202
        )
        self.assertEqual(body, {"status": "success"})
        self.assertEqual(
            self.fanout.calls,
            [
                (
                    "POST",
                    ["leader", "pio1", "pio2", "pio3"],
                    "/unit_api/jobs/stop",
                    {"experiment": "exp1"},
                )
            ],
        )
        await self.call(
            "PATCH", "/api/workers/pio3/jobs/stop/experiments/exp1", expect=202
        )
        self.assertEqual(self.fanout.calls[-1][1], ["pio3"])
        body = await self.call(
            "POST", "/api/units/ghost/jobs/stop/experiments/exp1", expect=400
        )
        self.assertEqual(body["error"], "Unknown Pioreactor unit: ghost")

    async def test_stopping_one_job_is_an_mqtt_message_with_a_fan_out_fallback(
        self,
    ) -> None:
        body = await self.call(
            "POST",
            "/api/workers/$broadcast/jobs/stop/job_name/stirring/experiments/exp1",
            expect=202,
        )
        self.assertEqual(body, {"status": "accepted"})
        self.assertEqual(
            self.mqtt.published,
            [
                (
                    "pioreactor/$broadcast/exp1/stirring/$state/set",
                    b"disconnected",
                    1,
                    False,
                )
            ],
        )
        self.mqtt.broken = True
        accepted = await self.call(
            "PATCH",
            "/api/units/pio1/jobs/stop/job_name/stirring/experiments/exp1",
            expect=202,
        )
        await self.finish_task(accepted)
        self.assertEqual(
            self.fanout.calls,
            [
                (
                    "POST",
                    ["pio1"],
                    "/unit_api/jobs/stop",
                    {"job_name": "stirring", "experiment": "exp1"},
                )
            ],
        )

    async def test_update_publishes_one_set_per_setting(self) -> None:
        path = "/api/units/pio1/jobs/update/job_name/stirring/experiments/exp1"
        body = await self.call(
            "PATCH",
            path,
            expect=202,
            json={"settings": {"target_rpm": 600, "enable_dodging_od": True}},
        )
        self.assertEqual(body, {"status": "accepted"})
        self.assertEqual(
            self.mqtt.published,
            [
                ("pioreactor/pio1/exp1/stirring/target_rpm/set", b"600", 1, False),
                (
                    "pioreactor/pio1/exp1/stirring/enable_dodging_od/set",
                    b"True",
                    1,
                    False,
                ),
            ],
        )
        await self.call("PATCH", path, expect=400, json={"settings": {}})
        await self.call("PATCH", path, expect=400, json={})
        self.mqtt.broken = True
        body = await self.call(
            "PATCH",
            path.replace("/units/", "/workers/"),
            expect=503,
            json={"settings": {"target_rpm": 1}},
        )
        self.assertIn("target_rpm", body["cause"])

    async def test_a_broker_that_never_answers_is_503_after_two_seconds(self) -> None:
        self.publisher.silent = True
        pending = self.call(
            "PATCH",
            "/api/units/pio1/jobs/update/job_name/stirring/experiments/exp1",
            expect=503,
            json={"settings": {"a": 1}},
        )
        answer = Deferred.fromCoroutine(pending)
        for _ in range(50):
            self.clock.advance(0.1)
            if answer.called:
                break
            await deferLater(reactor, 0.01)
        body = await answer
        self.assertIn("within 2 s", body["cause"])

    async def test_running_jobs_and_settings_fan_out_to_the_right_units(self) -> None:
        await self.finish_task(
            await self.call("GET", "/api/units/$broadcast/jobs/running", expect=202)
        )
        await self.finish_task(
            await self.call("GET", "/api/workers/pio3/jobs/running", expect=202)
        )
        await self.finish_task(
            await self.call(
                "GET",
                "/api/workers/$broadcast/jobs/settings/job_name/stirring/experiments/exp1",
                expect=202,
            )
        )
        await self.finish_task(
            await self.call(
                "GET",
                "/api/workers/pio1/jobs/settings/job_name/stirring/setting/target_rpm/experiments/exp1",
                expect=202,
            )
        )
        await self.finish_task(
            await self.call(
                "GET",
                "/api/workers/$broadcast/jobs/settings/job_name/stirring/experiments/$experiment",
                expect=202,
            )
        )
        self.assertEqual(
            [(units, path) for _, units, path, _ in self.fanout.calls],
            [
                (["leader", "pio1", "pio2", "pio3"], "/unit_api/jobs/running"),
                (["pio3"], "/unit_api/jobs/running"),
                (["pio1", "pio2"], "/unit_api/jobs/settings/job_name/stirring"),
                (
                    ["pio1"],
                    "/unit_api/jobs/settings/job_name/stirring/setting/target_rpm",
                ),
                (["pio1", "pio2", "pio3"], "/unit_api/jobs/settings/job_name/stirring"),
            ],
        )
        body = await self.call(
            "GET",
            "/api/workers/pio3/jobs/settings/job_name/stirring/experiments/exp1",
            expect=404,
        )
        self.assertIn("pio3", body["error"])
        await self.call("GET", "/api/units/ghost/jobs/running", expect=400)

    async def test_descriptors_are_the_leaders_own_or_one_workers(self) -> None:
        jobs = await self.call("GET", "/api/jobs/descriptors", expect=200)
        self.assertIn("stirring", [d["job_name"] for d in jobs])
        dosing = await self.call(
            "GET", "/api/automations/descriptors/dosing", expect=200
        )
        self.assertIn("chemostat", [d["automation_name"] for d in dosing])
        await self.call("GET", "/api/automations/descriptors/heating", expect=400)
        self.assertEqual(
            await self.call("GET", "/api/workers/pio1/jobs/descriptors", expect=200), {}
        )
        self.assertEqual(
            self.fanout.calls[-1][1:3], (["pio1"], "/unit_api/jobs/descriptors")
        )
        await self.call(
            "GET", "/api/workers/pio1/automations/descriptors/led", expect=200
        )
        self.assertEqual(
            self.fanout.calls[-1][2], "/unit_api/automations/descriptors/led"
        )
        await self.call(
            "GET", "/api/workers/pio1/automations/descriptors/leds", expect=400
        )
        body = await self.call(
            "GET", "/api/workers/$broadcast/jobs/descriptors", expect=400
        )
        self.assertIn("$broadcast", body["error"])
        await self.call("GET", "/api/workers/ghost/jobs/descriptors", expect=400)
        self.fanout.down.add("pio1")
        body = await self.call("GET", "/api/workers/pio1/jobs/descriptors", expect=502)
        self.assertIn("Could not reach pio1", body["error"])

    async def test_bioreactor_update_fans_out_and_blink_publishes(self) -> None:
        path = "/api/workers/{}/bioreactor/update/experiments/exp1"
        await self.finish_task(
            await self.call(
                "PATCH",
                path.format("$broadcast"),
                expect=202,
                json={"values": {"current_volume_ml": 12}},
            )
        )
        self.assertEqual(
            self.fanout.calls,
            [
                (
                    "PATCH",
                    ["pio1", "pio2"],
                    "/unit_api/bioreactor/experiments/exp1",
                    {"values": {"current_volume_ml": 12}},
                )
            ],
        )
        await self.finish_task(
            await self.call(
                "PATCH",
                path.format("pio3"),
                expect=202,
                json={"values": {"current_volume_ml": 12}},
            )
        )
        self.assertEqual(self.fanout.calls[-1][1], ["pio3"])
        body = await self.call(
            "PATCH", path.format("pio1"), expect=400, json={"values": {}}
        )
        self.assertEqual(body["error"], "Missing bioreactor values.")
        await self.call(
            "PATCH",
            path.format("ghost"),
            expect=400,
            json={"values": {"current_volume_ml": 12}},
        )
        self.assertEqual(
            await self.call("POST", "/api/workers/pio9/blink", expect=202),
            {"status": "accepted"},
        )
        self.assertEqual(
            self.mqtt.published,
            [
                (
                    "pioreactor/pio9/$experiment/monitor/flicker_led_response_okay",
                    b"1",
                    1,
                    False,
                )
            ],
        )

    async def test_names_that_cannot_be_topics_are_400_before_anything_is_published(
        self,
    ) -> None:
        for method, path, body in [
            (
                "PATCH",
                "/api/units/pio1/jobs/update/job_name/stirring/experiments/exp1",
                {"settings": {"a+b": 1}},
            ),
            (
                "PATCH",
                "/api/units/pio1/jobs/update/job_name/stirring/experiments/exp1",
                {"settings": {"ok": 1, "\udc25": 1}},
            ),
            (
                "POST",
                "/api/units/pio1/jobs/stop/job_name/st+irring/experiments/exp1",
                None,
            ),
            ("POST", "/api/workers/pio%2B1/blink", None),
        ]:
            error = (
                await self.call(method, path, expect=400, json=body)
                if body
                else await self.call(method, path, expect=400)
            )
            self.assertEqual(error["error"], "Invalid name for an MQTT topic.")
        self.assertEqual(self.mqtt.published, [])

    async def test_control_characters_never_reach_the_broker(self) -> None:
        for name in ["a\u0003b", "\u0085", "x\uffff"]:
            body = {"settings": {name: 1}}
            await self.call(
                "PATCH",
                "/api/units/pio1/jobs/update/job_name/stirring/experiments/exp1",
                expect=400,
                json=body,
            )
        await self.call("POST", "/api/workers/%18pio/blink", expect=400)
        self.assertEqual(self.mqtt.published, [])
