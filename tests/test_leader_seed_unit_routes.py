"""Issue 7's proof: every route of the leader seed under /api/units, /api/workers and /api/system answers
as documented on a local cluster (a leader and two simulated workers on real sockets, a real broker,
harmless system commands), for one named unit and for ``$broadcast`` where the reference allows it.

Expectations are leader_api.md's (§1 B, C, D, E, I, J, K; §5 for who ``$broadcast`` reaches; §6 for
the envelopes) except where docs/api-deviations.md says we differ on purpose; those places cite it.
Every request to a seed route goes through ``hit``, and the test ends by comparing what it called with
tests/data/leader_seed_unit_routes.txt (the seed's routes under those prefixes), so none is left out.
Last, pio2's service stops: each ``$broadcast`` read still answers, pio2 as its own failed envelope.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance import __version__

from .cluster import UNLIMITED, ClusterTestCase, route_index

EXP = "exp1"
# start_cluster registers the leader as a worker too, so WK (the /api/workers $broadcast) is all three, as CL is.
UNITS = ["leader", "pio1", "pio2"]
INDEX = Path(__file__).parent / "data" / "leader_seed_unit_routes.txt"
ACCEPTED = {"status": "accepted"}
SUCCESS = {"status": "success"}
LOG_KEYS = ["timestamp", "level", "pioreactor_unit", "message", "task", "experiment"]
JOB_ROW_KEYS = {
    "job_id",
    "unit",
    "experiment",
    "job_name",
    "job_source",
    "started_at",
    "is_running",
    "leader",
    "pid",
    "is_long_running_job",
    "ended_at",
}
PLUGIN_KEYS = {"name", "version", "description", "homepage", "source", "author"}


def stirring_calibration(name: str, unit: str) -> str:
    return (
        "calibration_type: simple_stirring\n"
        f"calibration_name: {name}\n"
        f"calibrated_on_pioreactor_unit: {unit}\n"
        "created_at: 2026-01-05 12:00:00+00:00\n"
        "curve_data_: {type: poly, coefficients: [10.0, 0.0]}\n"
        "x: DC %\n"
        "y: RPM\n"
        "recorded_data: {x: [20.0, 40.0], y: [200.0, 400.0]}\n"
        "pwm_hz: 200.0\n"
        "voltage: 5.0\n"
    )


def estimator(name: str, unit: str) -> str:
    return (
        "estimator_type: od_fused_estimator\n"
        f"estimator_name: {name}\n"
        f"calibrated_on_pioreactor_unit: {unit}\n"
        "created_at: 2026-01-05 12:00:00+00:00\n"
        "angles: ['45', '90']\n"
    )


class LeaderSeedUnitRouteTests(ClusterTestCase):
    timeout = 120

    def test_index_is_the_seeds(self) -> None:
        index = route_index(INDEX)
        self.assertEqual(len(index), 61)
        self.assertTrue(
            all(path.startswith(("/api/units", "/api/workers", "/api/system/")) for _, path in index)
        )

    async def test_every_route_for_one_unit_and_broadcast(self) -> None:
        # A short leader cache: the reads after pio2 stops must reach it, not reuse its answers from before.
        await self.start_cluster(["pio1", "pio2"], config="leader_cache_seconds=0.5\n" + UNLIMITED, simulated=True)
        # pio1 and pio2 run EXP; pio2 is inactive: job runs skip it (AEXPW), every other fan-out reaches it.
        await self.call("POST", "leader", "/api/experiments", json={"experiment": EXP}, expect=201)
        for worker in ("pio1", "pio2"):
            await self.call(
                "PUT", "leader", f"/api/experiments/{EXP}/workers", json={"pioreactor_unit": worker}, expect=200
            )
        await self.call("PUT", "leader", "/api/workers/pio2/is_active", json={"is_active": 0}, expect=200)
        self.roots = {
            unit: Path((await self.call("GET", unit, "/unit_api/system/path/", expect=200))["current"])
            for unit in UNITS
        }
        for family in (
            self.workers_and_units,
            self.jobs,
            self.logs_and_time_series,
            self.calibrations,
            self.estimators,
            self.sessions,
            self.plugins,
            self.system,
            self.archives,
        ):
            await family()
        self.assertEqual(sorted(route_index(INDEX) - self.hits), [], "seed routes this test never called")
        self.assertEqual(sorted(self.hits - route_index(INDEX)), [], "routes called that are not in the list")
        await self.with_pio2_stopped()

    # --- helpers -------------------------------------------------------------------

    async def result(self, method: str, route: str, params: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        """A fan-out route's A202, followed on the leader to its end: its per-unit result."""
        accepted = await self.hit(method, route, 202, params=params, **kwargs)
        self.assertEqual(set(accepted), {"unit", "task_id", "result_url_path", "status"}, accepted)
        self.assertEqual(accepted["unit"], "leader")
        self.assertEqual(accepted["result_url_path"], f"/unit_api/task_results/{accepted['task_id']}")
        body = await self.wait_for_result(accepted)
        self.assertEqual(body["status"], "succeeded", body)
        return body["result"]

    def values(self, result: dict[str, Any], units: list[str]) -> dict[str, Any]:
        """Exactly ``units``' envelopes, each a success: their values."""
        self.assertEqual(sorted(result), units, result)
        for unit, envelope in result.items():
            self.assertEqual(set(envelope), {"ok", "unit", "value"}, envelope)
            self.assertEqual((envelope["ok"], envelope["unit"]), (True, unit), envelope)
        return {unit: envelope["value"] for unit, envelope in result.items()}

    async def both(
        self, method: str, route: str, params: dict[str, str], broadcast: list[str], **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """The route for pio1 and for ``$broadcast`` (which must reach exactly ``broadcast``): pio1's value, every value."""
        one = self.values(await self.result(method, route, {**params, "pioreactor_unit": "pio1"}, **kwargs), ["pio1"])
        every = self.values(await self.result(method, route, {**params, "pioreactor_unit": "$broadcast"}, **kwargs), broadcast)
        return one["pio1"], every

    async def until_running_in_exp(self, jobs: list[str]) -> None:
        """Wait (5 s at most) until pio1 runs exactly ``jobs`` in EXP: a stop sent over MQTT takes a moment.

        Asks pio1 itself: the leader's fan-out reads count against its expensive-route budget."""
        for _ in range(50):
            rows = await self.call("GET", "pio1", "/unit_api/jobs/running", expect=200)
            if sorted(r["job_name"] for r in rows if r["experiment"] == EXP) == jobs:
                return
            await deferLater(reactor, 0.1)
        self.fail(f"pio1 never ran exactly {jobs} in {EXP}: {rows}")

    async def refused_broadcast(self, method: str, route: str, params: dict[str, str], **kwargs: Any) -> None:
        await self.error(method, route, 400, params={**params, "pioreactor_unit": "$broadcast"}, **kwargs)

    # --- §1 B -----------------------------------------------------------------------

    async def workers_and_units(self) -> None:
        self.assertEqual(await self.hit("GET", "/api/units", 200), [{"pioreactor_unit": u} for u in UNITS])
        workers = await self.hit("GET", "/api/workers", 200)
        self.assertEqual([w["pioreactor_unit"] for w in workers], UNITS)
        self.assertEqual([w["is_active"] for w in workers], [1, 1, 0])
        self.assertTrue(
            all(
                set(w) == {"pioreactor_unit", "added_at", "is_active", "model_name", "model_version", "ipv4_address"}
                for w in workers
            )
        )
        # Their [cluster.addresses] entries carry a port: not a literal IPv4, so null as in the reference.
        self.assertEqual([w["ipv4_address"] for w in workers], [None, None, None])
        self.assertEqual(
            await self.hit("PUT", "/api/workers", 201, json={"pioreactor_unit": "pio3", "model_name": "pioreactor_20ml"}),
            SUCCESS,
        )
        # api-deviations "PUT /api/workers": a re-add keeps the row (and pio2's assignment) and answers 200.
        self.assertEqual(await self.hit("PUT", "/api/workers", 200, json={"pioreactor_unit": "pio2"}), SUCCESS)
        await self.error("PUT", "/api/workers", 400, json={"pioreactor_unit": "$broadcast"})
        await self.error("PUT", "/api/workers", 400, json={})
        route = "/api/workers/{pioreactor_unit}"
        pio3 = await self.hit("GET", route, 200, params={"pioreactor_unit": "pio3"})
        self.assertEqual(
            (list(pio3), pio3["is_active"], pio3["model_name"]),
            (["pioreactor_unit", "added_at", "is_active", "model_name", "model_version"], 1, "pioreactor_20ml"),
        )
        self.assertEqual(await self.hit("DELETE", route, 202, params={"pioreactor_unit": "pio3"}), SUCCESS)
        await self.error("GET", route, 404, params={"pioreactor_unit": "pio3"})
        await self.error("DELETE", route, 404, params={"pioreactor_unit": "pio3"})
        assignment = await self.hit("GET", "/api/workers/{pioreactor_unit}/experiment", 200, params={"pioreactor_unit": "pio2"})
        self.assertEqual(
            assignment,
            {
                "pioreactor_unit": "pio2",
                "is_active": 0,
                "experiment": EXP,
                "model_name": assignment["model_name"],
                "model_version": assignment["model_version"],
            },
        )
        self.assertEqual(list(assignment), ["pioreactor_unit", "is_active", "experiment", "model_name", "model_version"])
        await self.error("GET", "/api/workers/{pioreactor_unit}/experiment", 404, params={"pioreactor_unit": "leader"})

    # --- §1 C -----------------------------------------------------------------------

    async def jobs(self) -> None:
        run = "/api/units/{pioreactor_unit}/jobs/run/job_name/{job_name}/experiments/{experiment}"
        on_exp = {"experiment": EXP}
        # A named unit must be active and assigned (404 otherwise); $broadcast is the active assigned workers.
        one = await self.result("POST", run, {**on_exp, "pioreactor_unit": "pio1", "job_name": "stirring"}, json={})
        self.assertEqual(self.values(one, ["pio1"]), {"pio1": {"ok": True}})
        every = await self.result("PATCH", run, {**on_exp, "pioreactor_unit": "$broadcast", "job_name": "od_reading"}, json={})
        self.assertEqual(self.values(every, ["pio1"]), {"pio1": {"ok": True}})
        await self.error("POST", run, 404, params={**on_exp, "pioreactor_unit": "pio2", "job_name": "stirring"}, json={})
        await self.error("POST", run, 404, params={**on_exp, "pioreactor_unit": "leader", "job_name": "stirring"}, json={})
        # §0: the run body is required ({} suffices); an empty one is 400.
        await self.error(
            "PATCH", run, 400, params={**on_exp, "pioreactor_unit": "pio1", "job_name": "stirring"},
            data=b"", headers={b"Content-Type": [b"application/json"]},
        )

        running, everywhere = await self.both("GET", "/api/units/{pioreactor_unit}/jobs/running", {}, UNITS)
        self.assertTrue(all(set(row) == JOB_ROW_KEYS for row in running), running)
        # Besides the long-running monitor every unit has: the two jobs just run, on pio1 only.
        in_exp = {u: sorted(r["job_name"] for r in rows if r["experiment"] == EXP) for u, rows in everywhere.items()}
        self.assertEqual(in_exp, {"leader": [], "pio1": ["od_reading", "stirring"], "pio2": []})
        self.assertEqual(sorted(r["job_name"] for r in running if r["experiment"] == EXP), ["od_reading", "stirring"])
        await self.error("GET", "/api/units/{pioreactor_unit}/jobs/running", 400, params={"pioreactor_unit": "pio9"})

        update = "/api/units/{pioreactor_unit}/jobs/update/job_name/{job_name}/experiments/{experiment}"
        for unit in ("pio1", "$broadcast"):
            self.assertEqual(
                await self.hit(
                    "PATCH", update, 202, params={**on_exp, "pioreactor_unit": unit, "job_name": "stirring"},
                    json={"settings": {"target_rpm": 450}},
                ),
                ACCEPTED,
            )
        await self.error(
            "PATCH", update, 400, params={**on_exp, "pioreactor_unit": "pio1", "job_name": "stirring"}, json={"settings": {}}
        )

        # The update goes out over MQTT (202 accepted): the job takes it a moment later.
        for _ in range(100):
            settings = await self.call("GET", "leader", f"/api/workers/pio1/jobs/settings/job_name/stirring/experiments/{EXP}", expect=202)
            settings = await self.wait_for_result(settings)
            if settings["result"]["pio1"]["value"]["settings"]["target_rpm"] == 450:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(settings["result"]["pio1"]["value"]["settings"]["target_rpm"], 450, settings)

        stop_job = "/api/units/{pioreactor_unit}/jobs/stop/job_name/{job_name}/experiments/{experiment}"
        self.assertEqual(
            await self.hit("POST", stop_job, 202, params={**on_exp, "pioreactor_unit": "pio1", "job_name": "stirring"}), ACCEPTED
        )
        await self.until_running_in_exp(["od_reading"])
        self.assertEqual(
            await self.hit("PATCH", stop_job, 202, params={**on_exp, "pioreactor_unit": "$broadcast", "job_name": "od_reading"}),
            ACCEPTED,
        )
        await self.until_running_in_exp([])
        await self.result("PATCH", run, {**on_exp, "pioreactor_unit": "pio1", "job_name": "stirring"}, json={})
        stop = "/api/units/{pioreactor_unit}/jobs/stop/experiments/{experiment}"
        for method, unit in (("POST", "pio1"), ("PATCH", "$broadcast")):
            self.assertEqual(await self.hit(method, stop, 202, params={**on_exp, "pioreactor_unit": unit}), SUCCESS)
        await self.error("POST", stop, 400, params={**on_exp, "pioreactor_unit": "pio9"})
        await self.until_running_in_exp([])

        for unit in ("pio1", "$broadcast"):
            self.assertEqual(await self.hit("POST", "/api/workers/{pioreactor_unit}/blink", 202, params={"pioreactor_unit": unit}), ACCEPTED)

    # --- §1 D, E --------------------------------------------------------------------

    async def logs_and_time_series(self) -> None:
        body = {"message": "hello", "source": "ui", "level": "INFO", "timestamp": "2026-01-05T12:00:00.000Z"}
        for family in ("units", "workers"):
            route = f"/api/{family}/{{pioreactor_unit}}/experiments/{{experiment}}/logs"
            for unit in ("pio1", "$broadcast"):
                self.assertEqual(
                    await self.hit("POST", route, 202, params={"pioreactor_unit": unit, "experiment": EXP}, json=body), ACCEPTED
                )
            await self.error("POST", route, 400, params={"pioreactor_unit": "pio1", "experiment": EXP}, json={"message": "x"})
        for route, params in (
            ("/api/units/{pioreactor_unit}/logs", {"pioreactor_unit": "pio1"}),
            ("/api/units/{pioreactor_unit}/system_logs", {"pioreactor_unit": "pio1"}),
            ("/api/workers/{pioreactor_unit}/experiments/{experiment}/logs", {"pioreactor_unit": "pio1", "experiment": EXP}),
            ("/api/workers/{pioreactor_unit}/experiments/{experiment}/recent_logs", {"pioreactor_unit": "pio1", "experiment": EXP}),
        ):
            rows = await self.hit("GET", route, 200, params=params)
            self.assertIsInstance(rows, list)
            self.assertTrue(all(list(row) == LOG_KEYS for row in rows), rows[:3])
            self.assertTrue(all(row["pioreactor_unit"] in ("pio1", "$broadcast") for row in rows), rows[:3])
        await self.call("GET", "leader", "/api/units/pio1/logs?skip=x", expect=400)
        series = "/api/workers/{pioreactor_unit}/experiments/{experiment}/time_series"
        for route, extra in (
            (f"{series}/growth_rates", {}),
            (f"{series}/od_readings", {}),
            (f"{series}/{{data_source}}/{{column}}", {"data_source": "od_readings", "column": "od_reading"}),
        ):
            answer = await self.hit("GET", route, 200, params={"pioreactor_unit": "pio1", "experiment": EXP, **extra})
            self.assertEqual(list(answer), ["series", "data"])
            self.assertEqual(len(answer["series"]), len(answer["data"]))
        await self.error(
            "GET",
            f"{series}/{{data_source}}/{{column}}",
            400,
            params={"pioreactor_unit": "pio1", "experiment": EXP, "data_source": "sqlite_master", "column": "name"},
        )

    # --- §1 I -----------------------------------------------------------------------

    async def calibrations(self) -> None:
        protocols, every = await self.both("GET", "/api/workers/{pioreactor_unit}/calibration_protocols", {}, UNITS)
        self.assertIn(("stirring", "dc_based"), {(p["target_device"], p["protocol_name"]) for p in protocols})
        self.assertEqual(every["pio1"], protocols)
        stirring = {"device": "stirring"}
        create = "/api/workers/{pioreactor_unit}/calibrations/{device}"
        one = await self.result(
            "POST", create, {**stirring, "pioreactor_unit": "pio1"}, json={"calibration_data": stirring_calibration("stir-1", "pio1")}
        )
        self.values(one, ["pio1"])
        every = await self.result(
            "POST",
            create,
            {**stirring, "pioreactor_unit": "$broadcast"},
            json={"calibration_data": stirring_calibration("stir-2", "pio1"), "set_as_active": True},
        )
        self.values(every, UNITS)
        await self.error("POST", create, 400, params={**stirring, "pioreactor_unit": "pio1"}, json={"calibration_data": "x: ["})
        await self.error("POST", create, 400, params={**stirring, "pioreactor_unit": "pio9"}, json={"calibration_data": "x"})

        listed, every = await self.both("GET", "/api/workers/{pioreactor_unit}/calibrations", {}, UNITS)
        self.assertEqual(sorted(c["calibration_name"] for c in listed["stirring"]), ["stir-1", "stir-2"])
        self.assertTrue(all(c["pioreactor_unit"] == "pio1" and "is_active" in c for c in listed["stirring"]))
        self.assertEqual([c["calibration_name"] for c in every["pio2"]["stirring"]], ["stir-2"])
        of_device, every = await self.both("GET", "/api/workers/{pioreactor_unit}/calibrations/{device}", stirring, UNITS)
        self.assertEqual(sorted(c["calibration_name"] for c in of_device), ["stir-1", "stir-2"])
        self.assertEqual([c["calibration_name"] for c in every["leader"]], ["stir-2"])
        named = {**stirring, "calibration_name": "stir-2"}
        one, every = await self.both("GET", "/api/workers/{pioreactor_unit}/calibrations/{device}/{calibration_name}", named, UNITS)
        self.assertEqual((one["calibration_name"], one["calibration_type"]), ("stir-2", "simple_stirring"))
        active, every = await self.both("GET", "/api/workers/{pioreactor_unit}/active_calibrations", {}, UNITS)
        self.assertEqual(active["stirring"]["calibration_name"], "stir-2")
        self.assertEqual({u: v["stirring"]["calibration_name"] for u, v in every.items()}, dict.fromkeys(UNITS, "stir-2"))

        activate = "/api/workers/{pioreactor_unit}/active_calibrations/{device}/{calibration_name}"
        self.values(await self.result("PATCH", activate, {**stirring, "calibration_name": "stir-1", "pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("PATCH", activate, {**named, "pioreactor_unit": "$broadcast"}), UNITS)
        deactivate = "/api/workers/{pioreactor_unit}/active_calibrations/{device}"
        self.values(await self.result("DELETE", deactivate, {**stirring, "pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("DELETE", deactivate, {**stirring, "pioreactor_unit": "$broadcast"}), UNITS)
        _, every = await self.both("GET", "/api/workers/{pioreactor_unit}/active_calibrations", {}, UNITS)
        # The simulated units' pump calibrations stay active; stirring has none any more.
        self.assertEqual({u: "stirring" in v for u, v in every.items()}, dict.fromkeys(UNITS, False))
        delete = "/api/workers/{pioreactor_unit}/calibrations/{device}/{calibration_name}"
        self.values(await self.result("DELETE", delete, {**stirring, "calibration_name": "stir-1", "pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("DELETE", delete, {**named, "pioreactor_unit": "$broadcast"}), UNITS)
        _, every = await self.both("GET", "/api/workers/{pioreactor_unit}/calibrations/{device}", stirring, UNITS)
        self.assertEqual(every, {u: [] for u in UNITS})
        await self.error("DELETE", delete, 400, params={**stirring, "calibration_name": "bad name!", "pioreactor_unit": "pio1"})

    async def estimators(self) -> None:
        device = {"device": "od_fused"}
        for unit, root in self.roots.items():
            folder = root / "storage" / "estimators" / "od_fused"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "est-1.yaml").write_text(estimator("est-1", unit))
        named = {**device, "estimator_name": "est-1"}
        activate = "/api/workers/{pioreactor_unit}/active_estimators/{device}/{estimator_name}"
        self.values(await self.result("PATCH", activate, {**named, "pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("PATCH", activate, {**named, "pioreactor_unit": "$broadcast"}), UNITS)
        listed, every = await self.both("GET", "/api/workers/{pioreactor_unit}/estimators", {}, UNITS)
        [entry] = listed["od_fused"]
        self.assertEqual((entry["estimator_name"], entry["is_active"], entry["pioreactor_unit"]), ("est-1", True, "pio1"))
        self.assertEqual(every["pio2"]["od_fused"][0]["pioreactor_unit"], "pio2")
        active, every = await self.both("GET", "/api/workers/{pioreactor_unit}/active_estimators", {}, UNITS)
        self.assertEqual(active["od_fused"]["estimator_name"], "est-1")
        of_device, every = await self.both("GET", "/api/workers/{pioreactor_unit}/estimators/{device}", device, UNITS)
        self.assertEqual([e["estimator_name"] for e in of_device], ["est-1"])
        one, every = await self.both("GET", "/api/workers/{pioreactor_unit}/estimators/{device}/{estimator_name}", named, UNITS)
        self.assertEqual((one["estimator_type"], every["leader"]["calibrated_on_pioreactor_unit"]), ("od_fused_estimator", "leader"))
        deactivate = "/api/workers/{pioreactor_unit}/active_estimators/{device}"
        self.values(await self.result("DELETE", deactivate, {**device, "pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("DELETE", deactivate, {**device, "pioreactor_unit": "$broadcast"}), UNITS)
        delete = "/api/workers/{pioreactor_unit}/estimators/{device}/{estimator_name}"
        self.values(await self.result("DELETE", delete, {**named, "pioreactor_unit": "pio1"}), ["pio1"])
        every = await self.result("DELETE", delete, {**named, "pioreactor_unit": "$broadcast"})
        # pio1's was deleted just before: its unit's 404 is its own envelope, the others succeed.
        self.assertEqual(sorted(every), UNITS)
        self.assertEqual((every["pio1"]["ok"], every["pio1"]["status_code"]), (False, 404), every["pio1"])
        self.values({u: every[u] for u in ("leader", "pio2")}, ["leader", "pio2"])
        _, every = await self.both("GET", "/api/workers/{pioreactor_unit}/estimators/{device}", device, UNITS)
        self.assertEqual(every, {u: [] for u in UNITS})

    async def sessions(self) -> None:
        sessions = "/api/workers/{pioreactor_unit}/calibrations/sessions"
        body = {"target_device": "stirring", "protocol_name": "dc_based"}
        view = await self.hit("POST", sessions, 201, params={"pioreactor_unit": "pio1"}, json=body)
        self.assertEqual(set(view), {"session", "step"})
        session = {"pioreactor_unit": "pio1", "session_id": view["session"]["session_id"]}
        await self.refused_broadcast("POST", sessions, {}, json=body)
        read = await self.hit("GET", sessions + "/{session_id}", 200, params=session)
        self.assertEqual(read["session"]["session_id"], session["session_id"])
        await self.refused_broadcast("GET", sessions + "/{session_id}", {"session_id": session["session_id"]})
        await self.error("GET", sessions + "/{session_id}", 404, params={**session, "session_id": "nope"})
        stepped = await self.hit("POST", sessions + "/{session_id}/inputs", 200, params=session, json={"inputs": {}})
        self.assertEqual(set(stepped), {"session", "step"})
        await self.refused_broadcast(
            "POST", sessions + "/{session_id}/inputs", {"session_id": session["session_id"]}, json={"inputs": {}}
        )
        await self.refused_broadcast("POST", sessions + "/{session_id}/abort", {"session_id": session["session_id"]})
        aborted = await self.hit("POST", sessions + "/{session_id}/abort", 200, params=session)
        self.assertEqual(aborted["session"]["status"], "aborted")

    # --- §1 J -----------------------------------------------------------------------

    async def plugins(self) -> None:
        installed, every = await self.both("GET", "/api/units/{pioreactor_unit}/plugins/installed", {}, UNITS)
        self.assertTrue(all(set(p) == PLUGIN_KEYS for plugins in every.values() for p in plugins), every)
        self.assertEqual(every["pio1"], installed)
        body = {"options": {}, "args": ["pioreactor-harmless-plugin"], "env": {}}
        for action in ("install", "uninstall"):
            route = f"/api/units/{{pioreactor_unit}}/plugins/{action}"
            self.values(await self.result("POST", route, {"pioreactor_unit": "pio1"}, json=body), ["pio1"])
            self.values(await self.result("PATCH", route, {"pioreactor_unit": "$broadcast"}, json=body), UNITS)
            await self.error("POST", route, 400, params={"pioreactor_unit": "pio1"}, json={**body, "args": ["a; rm -rf /"]})
            await self.error("POST", route, 400, params={"pioreactor_unit": "pio9"}, json=body)

    # --- §1 K -----------------------------------------------------------------------

    async def system(self) -> None:
        version, every = await self.both("GET", "/api/units/{pioreactor_unit}/versions/app", {}, UNITS)
        self.assertEqual(version, {"version": __version__})
        self.assertEqual(every, {u: version for u in UNITS})
        clock, every = await self.both("GET", "/api/units/{pioreactor_unit}/system/utc_clock", {}, UNITS)
        self.assertEqual(list(clock), ["clock_time"])
        self.assertTrue(all(v["clock_time"].endswith("Z") for v in every.values()))
        for family in ("units", "workers"):
            capabilities, every = await self.both("GET", f"/api/{family}/{{pioreactor_unit}}/capabilities", {}, UNITS)
            self.assertIn("stirring", {entry["job_name"] for entry in capabilities})
        await self.error("GET", "/api/units/{pioreactor_unit}/versions/app", 400, params={"pioreactor_unit": "127.0.0.1"})

        # Each unit takes one power action per 15 s (§1 K): a second inside that is its own 429 envelope.
        self.values(await self.result("POST", "/api/units/{pioreactor_unit}/system/reboot", {"pioreactor_unit": "pio1"}), ["pio1"])
        self.values(await self.result("POST", "/api/units/{pioreactor_unit}/system/shutdown", {"pioreactor_unit": "pio2"}), ["pio2"])
        for action in ("reboot", "shutdown"):
            every = await self.result("POST", f"/api/units/{{pioreactor_unit}}/system/{action}", {"pioreactor_unit": "$broadcast"})
            self.assertEqual(sorted(every), UNITS)
            for unit in ("pio1", "pio2"):
                self.assertEqual((every[unit]["ok"], every[unit]["status_code"]), (False, 429), every[unit])
            self.assertEqual(every["leader"]["ok"], action == "reboot", every["leader"])

        # api-deviations "System through the leader": the leader and every worker are in the clock result.
        clock = {"utc_clock_time": "2026-01-05T12:00:00.000Z"}
        self.values(await self.result("POST", "/api/system/utc_clock", {}, json=clock), UNITS)
        await self.error("POST", "/api/system/utc_clock", 400, json={"utc_clock_time": "noon"})

        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("pioreactor_appliance-26.7.2-py3-none-any.whl", "a wheel")
        uploaded = await self.hit(
            "POST", "/api/system/upload", 200, files={"file": ("release.zip", "application/zip", io.BytesIO(archive.getvalue()))}
        )
        self.assertEqual(uploaded["message"], "File successfully uploaded")
        self.assertTrue(uploaded["save_path"].endswith("_release.zip"))
        await self.error("POST", "/api/system/upload", 400, files={"other": ("a.zip", "application/zip", io.BytesIO(b"x"))})
        # api-deviations "System through the leader": each unit installs the archive's wheel; the result is true.
        # pio2 only: a unit updates at most once per 10 s, and pio1 and the leader update next.
        from_archive = await self.hit(
            "POST", "/api/system/update_from_archive", 202, json={"release_archive_location": uploaded["save_path"], "units": "pio2"}
        )
        updated = await self.wait_for_result(from_archive)
        self.assertEqual((updated["status"], updated.get("result")), ("succeeded", True), updated)
        await self.error(
            "POST", "/api/system/update_from_archive", 400, json={"release_archive_location": "/etc/x.zip", "units": "pio1"}
        )
        update = "/api/system/update_next_version"
        updated = await self.wait_for_result(await self.hit("POST", update, 202, json={"units": "pio1"}))
        self.assertEqual((updated["status"], updated.get("result")), ("succeeded", True), updated)
        # No body is $broadcast. A unit updates at most once per 10 s (api-deviations "System commands"), so pio1
        # and pio2 refuse this one, and the task fails naming them (api-deviations "System through the leader").
        updated = await self.wait_for_result(await self.hit("POST", update, 202))
        self.assertEqual((updated["status"], updated["error"]), ("failed", "The update failed on pio1, pio2."), updated)
        self.assertIn("pio1: Too many requests", updated["cause"])
        self.assertIn("pio2: Too many requests", updated["cause"])

    async def archives(self) -> None:
        route = "/api/units/{pioreactor_unit}/zipped_dot_pioreactor"
        one = await self.hit("GET", route, 200, params={"pioreactor_unit": "pio1"}, media="application/zip")
        with zipfile.ZipFile(io.BytesIO(one)) as z:
            self.assertIn("config.ini", z.namelist())
        cluster = await self.hit("GET", route, 200, params={"pioreactor_unit": "$broadcast"}, media="application/zip")
        with zipfile.ZipFile(io.BytesIO(cluster)) as z:
            # api-deviations "Archives through the leader": an archive of each unit's archive.
            self.assertEqual(sorted(z.namelist()), [f"{u}/dot_pioreactor.zip" for u in UNITS])
        await self.error("GET", route, 400, params={"pioreactor_unit": "pio9"})
        restore = "/api/units/{pioreactor_unit}/import_zipped_dot_pioreactor"
        await self.refused_broadcast(
            "POST", restore, {}, files={"archive": ("dot.zip", "application/zip", io.BytesIO(one))}
        )
        await self.error("POST", restore, 400, params={"pioreactor_unit": "pio1"}, files={"other": ("a.zip", "application/zip", io.BytesIO(one))})
        accepted = await self.hit(
            "POST", restore, 202, params={"pioreactor_unit": "pio1"}, files={"archive": ("dot.zip", "application/zip", io.BytesIO(one))}
        )
        # The unit's own 202 passes through: its task lives on pio1.
        self.assertEqual(accepted["unit"], "pio1")
        imported = await self.wait_for_result(accepted, "pio1")
        self.assertEqual(imported["status"], "succeeded", imported)

        # Not in the seed's list, but the same family (§1 I): the workers' calibrations, inactive pio2 included.
        one = await self.zipped_calibrations("pio1")
        self.assertEqual({name.split("/")[0] for name in one}, {"pio1"})
        every = await self.zipped_calibrations("$broadcast")
        self.assertEqual({name.split("/")[0] for name in every}, set(UNITS))
        self.assertTrue(set(one) < set(every))

    async def zipped_calibrations(self, unit: str, failed: str | None = None) -> list[str]:
        """GET /api/workers/<unit>/zipped_calibrations: the names in its zip; ``failed`` the units it says failed."""
        response = await self.http.get(self.url("leader", f"/api/workers/{unit}/zipped_calibrations"), headers=self.headers)
        content = await response.content()
        self.assertEqual(response.code, 200, content[:600])
        self.assertEqual(response.headers.getRawHeaders(b"x-pioreactor-failed-units"), failed and [failed.encode()])
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            return [name for name in z.namelist() if name != "failed_units.json"]

    # --- a worker stops ----------------------------------------------------------------

    async def with_pio2_stopped(self) -> None:
        await self.services["pio2"].stopService()
        # The leader's kept-alive connection to pio2 would still answer once: drop it.
        await self.services["leader"].getServiceNamed("fanout")._pool.closeCachedConnections()
        for route in (
            "/api/units/{pioreactor_unit}/versions/app",
            "/api/units/{pioreactor_unit}/system/utc_clock",
            "/api/units/{pioreactor_unit}/jobs/running",
            "/api/units/{pioreactor_unit}/capabilities",
            "/api/workers/{pioreactor_unit}/capabilities",
            "/api/units/{pioreactor_unit}/plugins/installed",
            "/api/workers/{pioreactor_unit}/calibration_protocols",
            "/api/workers/{pioreactor_unit}/calibrations",
            "/api/workers/{pioreactor_unit}/active_calibrations",
            "/api/workers/{pioreactor_unit}/estimators",
            "/api/workers/{pioreactor_unit}/active_estimators",
            "/api/workers/{pioreactor_unit}/calibrations/{device}",
        ):
            result = await self.result("GET", route, {"pioreactor_unit": "$broadcast", "device": "stirring"})
            self.assertEqual(sorted(result), UNITS, route)
            self.values({u: result[u] for u in ("leader", "pio1")}, ["leader", "pio1"])
            failed = result["pio2"]
            self.assertEqual(
                (failed["ok"], failed["unit"], failed["error"]["kind"], failed["retryable"], failed["status_code"]),
                (False, "pio2", "connection_error", True, None),
                (route, failed),
            )
        # The synchronous archives leave pio2 out and name it (api-deviations "Archives through the leader").
        cluster = await self.hit(
            "GET", "/api/units/{pioreactor_unit}/zipped_dot_pioreactor", 200,
            params={"pioreactor_unit": "$broadcast"}, media="application/zip",
        )
        self.assertEqual(self.last_headers.getRawHeaders(b"x-pioreactor-failed-units"), [b"pio2"])
        with zipfile.ZipFile(io.BytesIO(cluster)) as z:
            self.assertEqual(sorted(z.namelist()), ["failed_units.json", "leader/dot_pioreactor.zip", "pio1/dot_pioreactor.zip"])
        self.assertEqual(
            {name.split("/")[0] for name in await self.zipped_calibrations("$broadcast", failed="pio2")}, {"leader", "pio1"}
        )
