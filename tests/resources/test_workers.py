from __future__ import annotations

import json
from typing import Any

from ..helpers import LeaderApiTestCase
from ..mdns_responder import ptr, srv, start_responder

ASSIGNMENT = "pioreactor/{}/$experiment/assignment"


class WorkerRoutesTests(LeaderApiTestCase):
    async def setUp(self) -> None:
        await self.start()

    async def add(self, unit: str, **fields: Any) -> Any:
        return await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit, **fields})

    async def experiment(self, name: str) -> None:
        await self.call("POST", "/api/experiments", expect=201, json={"experiment": name})

    async def assign(self, experiment: str, unit: str) -> Any:
        return await self.call("PUT", f"/api/experiments/{experiment}/workers", expect=200, json={"pioreactor_unit": unit})

    async def test_units_and_workers(self) -> None:
        self.assertEqual(await self.call("GET", "/api/units", expect=200), [{"pioreactor_unit": "leader"}])
        self.assertEqual(await self.add("pio2", model_name="pioreactor_40ml", model_version="1.5"), {"status": "success"})
        await self.add("pio1")
        await self.add("leader")
        self.assertEqual(await self.call("GET", "/api/units", expect=200), [{"pioreactor_unit": u} for u in ("leader", "pio1", "pio2")])
        workers = await self.call("GET", "/api/workers", expect=200)
        self.assertEqual([w["pioreactor_unit"] for w in workers], ["leader", "pio1", "pio2"])
        self.assertEqual(
            workers[2],
            {"pioreactor_unit": "pio2", "added_at": self.NOW_ISO, "is_active": 1, "model_name": "pioreactor_40ml", "model_version": "1.5", "ipv4_address": None},
        )
        self.assertEqual(workers[1]["ipv4_address"], "10.0.0.21")
        self.assertEqual(
            await self.call("GET", "/api/workers/pio2", expect=200),
            {"pioreactor_unit": "pio2", "added_at": self.NOW_ISO, "is_active": 1, "model_name": "pioreactor_40ml", "model_version": "1.5"},
        )

    async def test_re_adding_updates_the_model_and_keeps_the_assignment(self) -> None:
        await self.experiment("exp1")
        await self.add("pio1")
        await self.assign("exp1", "pio1")
        self.clock.advance(60)
        self.assertEqual(
            await self.call("PUT", "/api/workers", expect=200, json={"pioreactor_unit": "pio1", "model_name": "pioreactor_20ml", "model_version": "1.1"}),
            {"status": "success"},
        )
        worker = await self.call("GET", "/api/workers/pio1", expect=200)
        self.assertEqual((worker["added_at"], worker["model_name"]), (self.NOW_ISO, "pioreactor_20ml"))
        self.assertEqual((await self.call("GET", "/api/workers/pio1/experiment", expect=200))["experiment"], "exp1")

    async def test_worker_name_rules(self) -> None:
        cases = {
            "$broadcast": "$broadcast means every unit",
            "10.0.0.5": "is an IP address",
            "fe80::1": "is an IP address",
            "localhost": "localhost is not a unit's name",
            "LocalHost": "localhost is not a unit's name",
            "pio 1": "letters, digits",
            "pio.local": "letters, digits",
            "": "letters, digits",
            "p" * 64: "1 to 63",
        }
        for name, rule in cases.items():
            await self.error("PUT", "/api/workers", 400, "pioreactor_unit:", rule, json={"pioreactor_unit": name})
        self.assertEqual(await self.call("GET", "/api/workers", expect=200), [])

    async def test_worker_bad_bodies(self) -> None:
        await self.error("PUT", "/api/workers", 400, "required field missing @ body.pioreactor_unit", json={})
        await self.error("PUT", "/api/workers", 400, "extra fields found (name)", json={"pioreactor_unit": "pio1", "name": "x"})
        await self.error("PUT", "/api/workers", 400, "expected a string, got int @ body.model_version", json={"pioreactor_unit": "pio1", "model_version": 1})
        code, body = await self.call_raw("PUT", "/api/workers", b"[")
        self.assertEqual((code, body["error"]), (400, "Invalid request body."))

    async def test_unknown_worker(self) -> None:
        await self.error("GET", "/api/workers/nope", 404, "Worker nope not found")
        await self.error("DELETE", "/api/workers/nope", 404, "Worker nope not found")
        await self.error("GET", "/api/workers/nope/experiment", 404, "Worker nope not found")
        await self.error("PUT", "/api/workers/nope/is_active", 400, "Unknown Pioreactor worker: nope", json={"is_active": 1})
        await self.error("PUT", "/api/workers/$broadcast/is_active", 400, "$broadcast is not accepted here", json={"is_active": 1})
        self.assertEqual(self.fanout.calls, [])

    async def test_delete_worker_stops_its_jobs_and_clears_its_assignment(self) -> None:
        await self.experiment("exp1")
        await self.add("pio1")
        await self.add("leader")
        await self.assign("exp1", "pio1")
        self.fanout.calls.clear()
        self.mqtt.published.clear()
        self.assertEqual(await self.call("DELETE", "/api/workers/pio1", expect=202), {"status": "success"})
        self.assertEqual(
            self.fanout.calls,
            [
                ("POST", ["pio1"], "/unit_api/jobs/stop/all", None),
                ("POST", ["pio1"], "/unit_api/system/remove_file", {"filepath": "$DOT_PIOREACTOR/config.ini"}),
            ],
        )
        self.assertEqual(self.mqtt.published, [(ASSIGNMENT.format("pio1"), b"", 1, True)])
        await self.error("GET", "/api/workers/pio1", 404, "pio1")
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/workers", expect=200), [])
        self.fanout.calls.clear()
        await self.call("DELETE", "/api/workers/leader", expect=202)
        self.assertEqual(self.fanout.calls, [("POST", ["leader"], "/unit_api/jobs/stop/all", None)])  # the leader keeps its config

    async def test_is_active(self) -> None:
        await self.add("pio1")
        worker = await self.call("PUT", "/api/workers/pio1/is_active", expect=200, json={"is_active": 0})
        self.assertEqual(worker["is_active"], 0)
        self.assertEqual(self.fanout.calls, [("POST", ["pio1"], "/unit_api/jobs/stop/all", None)])
        self.assertEqual((await self.call("PUT", "/api/workers/pio1/is_active", expect=200, json={"is_active": 1}))["is_active"], 1)
        self.assertEqual(len(self.fanout.calls), 1)  # going active stops nothing
        await self.error("PUT", "/api/workers/pio1/is_active", 400, "got a boolean", json={"is_active": True})
        await self.error("PUT", "/api/workers/pio1/is_active", 400, "is_active: must be 0 or 1, not 2", json={"is_active": 2})
        await self.error("PUT", "/api/workers/pio1/is_active", 400, "expected an integer, got str", json={"is_active": "1"})

    async def test_assign_publishes_retained_and_reports_where_it_is(self) -> None:
        await self.experiment("exp1")
        await self.add("pio1", model_name="pioreactor_20ml", model_version="1.5")
        with self.assertRaises(AssertionError):
            await self.call("GET", "/api/workers/pio1/experiment", expect=200)
        body = await self.error("GET", "/api/workers/pio1/experiment", 404, "not assigned to an experiment")
        self.assertIn("PUT /api/experiments/<experiment>/workers", body["remediation"])
        self.assertEqual(await self.assign("exp1", "pio1"), {"pioreactor_unit": "pio1", "experiment": "exp1", "assigned_at": self.NOW_ISO})
        [(topic, payload, qos, retain)] = self.mqtt.published
        self.assertEqual((topic, qos, retain), (ASSIGNMENT.format("pio1"), 1, True))
        self.assertEqual(json.loads(payload), {"pioreactor_unit": "pio1", "experiment": "exp1", "assigned_at": self.NOW_ISO, "updated_at": self.NOW_ISO})
        self.assertEqual(self.fanout.calls, [])
        self.assertEqual(
            await self.call("GET", "/api/workers/pio1/experiment", expect=200),
            {"pioreactor_unit": "pio1", "is_active": 1, "experiment": "exp1", "model_name": "pioreactor_20ml", "model_version": "1.5"},
        )
        self.assertEqual(
            await self.call("GET", "/api/experiments/exp1/workers", expect=200),
            [{"pioreactor_unit": "pio1", "is_active": 1, "model_name": "pioreactor_20ml", "model_version": "1.5"}],
        )

    async def test_reassignment_stops_the_old_experiments_jobs(self) -> None:
        await self.experiment("exp1")
        await self.experiment("exp2")
        await self.add("pio1")
        await self.assign("exp1", "pio1")
        self.clock.advance(10)
        self.assertEqual((await self.assign("exp2", "pio1"))["experiment"], "exp2")
        self.assertEqual(self.fanout.calls, [("POST", ["pio1"], "/unit_api/jobs/stop", {"experiment": "exp1"})])
        await self.assign("exp2", "pio1")  # already there: nothing to stop
        self.assertEqual(len(self.fanout.calls), 1)
        self.assertEqual(
            await self.call("GET", "/api/experiments/exp1/historical_worker_assignments", expect=200),
            [{"pioreactor_unit": "pio1", "experiment": "exp1", "is_currently_assigned_to_experiment": 0}],
        )
        self.assertEqual(
            await self.call("GET", "/api/experiments/exp2/historical_worker_assignments", expect=200),
            [{"pioreactor_unit": "pio1", "experiment": "exp2", "is_currently_assigned_to_experiment": 1}],
        )
        self.assertEqual(await self.call("GET", "/api/experiments/nope/historical_worker_assignments", expect=200), [])

    async def test_a_failing_unit_or_broker_does_not_fail_the_request(self) -> None:
        await self.experiment("exp1")
        await self.experiment("exp2")
        await self.add("pio1")
        await self.assign("exp1", "pio1")
        self.fanout.down.add("pio1")
        self.mqtt.broken = True
        await self.assign("exp2", "pio1")
        self.assertEqual(len(self.flushLoggedErrors()), 1)  # the publish failure is logged, the unit's failure warned

    async def test_assign_errors(self) -> None:
        await self.experiment("exp1")
        await self.add("pio1")
        await self.error("PUT", "/api/experiments/nope/workers", 404, "Experiment nope not found", json={"pioreactor_unit": "pio1"})
        await self.error("PUT", "/api/experiments/exp1/workers", 400, "Unknown Pioreactor worker: pio9", json={"pioreactor_unit": "pio9"})
        await self.error("PUT", "/api/experiments/exp1/workers", 400, "$broadcast is not accepted here", json={"pioreactor_unit": "$broadcast"})
        await self.error("PUT", "/api/experiments/exp1/workers", 400, "required field missing @ body.pioreactor_unit", json={"unit": "pio1"})
        await self.error("PUT", "/api/experiments/exp1/workers", 400, "expected a string, got list", json={"pioreactor_unit": ["pio1"]})
        await self.error("GET", "/api/experiments/nope/workers", 404, "Experiment nope not found")
        self.assertEqual((self.mqtt.published, self.fanout.calls), ([], []))

    async def test_unassign_one(self) -> None:
        await self.experiment("exp1")
        await self.experiment("exp2")
        await self.add("pio1")
        await self.add("pio2")
        await self.assign("exp1", "pio1")
        self.mqtt.published.clear()
        await self.error("DELETE", "/api/experiments/exp2/workers/pio1", 404, "pio1 is not assigned to exp2")
        await self.error("DELETE", "/api/experiments/exp1/workers/pio2", 404, "pio2 is not assigned to exp1")
        await self.error("DELETE", "/api/experiments/exp1/workers/pio9", 400, "Unknown Pioreactor worker: pio9")
        await self.error("DELETE", "/api/experiments/exp1/workers/$broadcast", 400, "$broadcast")
        await self.error("DELETE", "/api/experiments/nope/workers/pio1", 404, "Experiment nope not found")
        self.assertEqual(await self.call("DELETE", "/api/experiments/exp1/workers/pio1", expect=200), {"status": "success"})
        self.assertEqual(self.mqtt.published, [(ASSIGNMENT.format("pio1"), b"", 1, True)])
        self.assertEqual(self.fanout.calls, [("POST", ["pio1"], "/unit_api/jobs/stop", {"experiment": "exp1"})])
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/workers", expect=200), [])

    async def test_unassign_experiment_in_a_task(self) -> None:
        await self.experiment("exp1")
        await self.experiment("exp2")
        for unit in ("pio1", "pio2", "pio3"):
            await self.add(unit)
        await self.assign("exp1", "pio1")
        await self.assign("exp1", "pio2")
        await self.assign("exp2", "pio3")
        self.mqtt.published.clear()
        accepted = await self.call("DELETE", "/api/experiments/exp1/workers", expect=202)
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/workers", expect=200), [])  # done before the 202
        result = await self.finish_task(accepted)
        self.assertEqual(result["status"], "succeeded")
        self.assertEqual(sorted(result["result"]), ["pio1", "pio2", "pio3"])
        self.assertEqual(self.mqtt.published, [(ASSIGNMENT.format(u), b"", 1, True) for u in ("pio1", "pio2")])
        self.assertEqual(self.fanout.calls, [("POST", ["pio1", "pio2", "pio3"], "/unit_api/jobs/stop", {"experiment": "exp1"})])
        await self.error("DELETE", "/api/experiments/nope/workers", 404, "nope")

    async def test_assignments_and_unassign_all(self) -> None:
        await self.experiment("exp1")
        await self.add("pio1")
        await self.add("pio2")
        await self.assign("exp1", "pio2")
        self.assertEqual(
            await self.call("GET", "/api/workers/assignments", expect=200),
            [{"pioreactor_unit": "pio1", "experiment": None, "is_active": 1}, {"pioreactor_unit": "pio2", "experiment": "exp1", "is_active": 1}],
        )
        self.mqtt.published.clear()
        result = await self.finish_task(await self.call("DELETE", "/api/workers/assignments", expect=202))
        self.assertEqual(result["result"], {u: {"ok": True, "unit": u, "value": {}} for u in ("pio1", "pio2")})
        self.assertEqual(self.mqtt.published, [(ASSIGNMENT.format("pio2"), b"", 1, True)])
        self.assertEqual(self.fanout.calls[-1], ("POST", ["pio1", "pio2"], "/unit_api/jobs/stop/all", None))
        self.assertEqual([a["experiment"] for a in await self.call("GET", "/api/workers/assignments", expect=200)], [None, None])


class DiscoverRouteTests(LeaderApiTestCase):
    """GET /api/workers/discover over a real loopback UDP browse."""

    async def setUp(self) -> None:
        await self.start()

    async def test_lists_unregistered_valid_workers_once_sorted(self) -> None:
        _, self.discovery.address = start_responder(
            self,
            [
                b"\x00garbage",
                [ptr(b"pio07"), ptr(b"pio05"), ptr(b"pio01"), ptr(b"bad name"), ptr(b"localhost")],
                ([ptr(b"pio05")], [srv(b"pio06")]),
            ],
        )
        await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": "pio01"})
        self.assertEqual(
            await self.call("GET", "/api/workers/discover", expect=200),
            [{"pioreactor_unit": u} for u in ("pio05", "pio06", "pio07")],
        )

    async def test_no_answer_is_an_empty_list(self) -> None:
        self.assertEqual(await self.call("GET", "/api/workers/discover", expect=200), [])

    async def test_a_query_that_cannot_be_sent_is_a_503_naming_the_fix(self) -> None:
        self.discovery.address = ("255.255.255.255", 5353)  # broadcast without SO_BROADCAST: the kernel refuses to send
        body = await self.error("GET", "/api/workers/discover", 503, "Cannot look for workers by mDNS", "255.255.255.255:5353")
        self.assertIn("by name or IPv4 address instead", body["remediation"])
