from __future__ import annotations

from typing import Any

from ..helpers import LeaderApiTestCase, response_of


class ExperimentRoutesTests(LeaderApiTestCase):
    async def setUp(self) -> None:
        await self.start()

    async def create(self, name: str = "exp1", **fields: Any) -> dict[str, Any]:
        return await self.call("POST", "/api/experiments", expect=201, json={"experiment": name, **fields})

    async def test_create_answers_201_with_the_object(self) -> None:
        created = await self.create("exp1", description="first", tags=[" a ", "B", "", "b", "a", "c"])
        self.assertEqual(
            created,
            {"experiment": "exp1", "created_at": self.NOW_ISO, "description": "first", "worker_count": 0, "delta_hours": 0.0, "tags": ["a", "B", "c"]},
        )
        self.assertEqual(await self.call("GET", "/api/experiments/exp1", expect=200), created)

    async def test_create_accepts_null_description_echoed_fields_and_seed_media(self) -> None:
        created = await self.create("exp1", description=None, created_at="x", delta_hours=3, worker_count=1, mediaUsed="LB", organismUsed="E. coli")
        self.assertEqual((created["description"], created["created_at"], created["worker_count"]), ("", self.NOW_ISO, 0))

    async def test_duplicate_is_409(self) -> None:
        await self.create("exp1")
        await self.error("POST", "/api/experiments", 409, "exp1", "already exists", json={"experiment": "exp1"})

    async def test_name_rules_are_400_naming_the_rule(self) -> None:
        cases = {
            "": "must not be empty",
            "x" * 200: "under 200 characters",
            "Current": "'current' is reserved",
            "_testing_run": "_testing",
            "a/b": "must not contain /",
            "50% #2": "must not contain # %",
            "$e": "must not contain $",
        }
        for name, rule in cases.items():
            body = await self.error("POST", "/api/experiments", 400, "experiment:", rule, json={"experiment": name})
            self.assertEqual(body["error"], "Invalid request body.")
        self.assertEqual(await self.call("GET", "/api/experiments", expect=200), [])

    async def test_bad_bodies(self) -> None:
        await self.error("POST", "/api/experiments", 400, "extra fields found (colour)", json={"experiment": "e", "colour": "red"})
        await self.error("POST", "/api/experiments", 400, "required field missing @ body.experiment", json={})
        await self.error("POST", "/api/experiments", 400, "expected a string, got int @ body.experiment", json={"experiment": 5})
        await self.error("POST", "/api/experiments", 400, "expected a list, got str @ body.tags", json={"experiment": "e", "tags": "a,b"})
        await self.error("POST", "/api/experiments", 400, "expected a string, got int @ body.tags[1]", json={"experiment": "e", "tags": ["a", 1]})
        await self.error("POST", "/api/experiments", 400, "expected a list, got NoneType @ body.tags", json={"experiment": "e", "tags": None})
        code, body = await self.call_raw("POST", "/api/experiments", b"{not json")
        self.assertEqual((code, body["error"]), (400, "Invalid request body."))
        self.assertIn("Malformed JSON", body["cause"])
        code, body = await self.call_raw("POST", "/api/experiments", b"", content_type=b"application/json")
        self.assertEqual((code, body["cause"]), (400, "The body is empty."))
        code, body = await self.call_raw("POST", "/api/experiments", b"experiment=e", content_type=b"application/x-www-form-urlencoded")
        self.assertEqual(code, 415)

    async def test_list_newest_first_with_cache_header(self) -> None:
        await self.create("exp1")
        self.clock.advance(3 * 3600)
        await self.create("exp2")
        listed = await self.call("GET", "/api/experiments", expect=200)
        self.assertEqual([(e["experiment"], e["delta_hours"]) for e in listed], [("exp2", 0.0), ("exp1", 3.0)])
        response = await response_of(self.stub, "GET", "/api/experiments")
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=5"])

    async def test_latest_active_and_assignment_count(self) -> None:
        self.assertIsNone(await self.call("GET", "/api/experiments/latest", expect=200))
        await self.create("exp1")
        await self.create("exp2")
        self.assertEqual((await self.call("GET", "/api/experiments/latest", expect=200))["experiment"], "exp2")
        self.assertEqual(await self.call("GET", "/api/experiments/active", expect=200), [])
        self.assertEqual(await self.call("GET", "/api/experiments/assignment_count", expect=200), [])
        for unit in ("pio1", "pio2"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
            await self.call("PUT", "/api/experiments/exp1/workers", expect=200, json={"pioreactor_unit": unit})
        await self.call("PUT", "/api/workers/pio2/is_active", expect=200, json={"is_active": 0})
        self.assertEqual([e["experiment"] for e in await self.call("GET", "/api/experiments/active", expect=200)], ["exp1"])
        self.assertEqual(await self.call("GET", "/api/experiments/assignment_count", expect=200), [{"experiment": "exp1", "worker_count": 2}])
        self.assertEqual((await self.call("GET", "/api/experiments/exp1", expect=200))["worker_count"], 2)
        await self.call("PUT", "/api/workers/pio1/is_active", expect=200, json={"is_active": 0})
        self.assertEqual(await self.call("GET", "/api/experiments/active", expect=200), [])

    async def test_unknown_experiment_is_404(self) -> None:
        for method in ("GET", "DELETE"):
            await self.error(method, "/api/experiments/nope", 404, "Experiment nope not found")
        await self.error("PATCH", "/api/experiments/nope", 404, "nope", json={"description": "x"})

    async def test_patch_returns_the_updated_object(self) -> None:
        await self.create("exp1", description="old", tags=["a"])
        updated = await self.call("PATCH", "/api/experiments/exp1", expect=200, json={"tags": ["x", "X", "y"]})
        self.assertEqual((updated["description"], updated["tags"]), ("old", ["x", "y"]))
        updated = await self.call("PATCH", "/api/experiments/exp1", expect=200, json={"description": None})
        self.assertEqual((updated["description"], updated["tags"]), ("", ["x", "y"]))
        updated = await self.call("PATCH", "/api/experiments/exp1", expect=200, json={"description": "new", "tags": []})
        self.assertEqual((updated["description"], updated["tags"]), ("new", []))

    async def test_patch_bad_bodies(self) -> None:
        await self.create("exp1")
        await self.error("PATCH", "/api/experiments/exp1", 400, "Missing description or tags", json={})
        await self.error("PATCH", "/api/experiments/exp1", 400, "extra fields found (experiment)", json={"experiment": "new"})
        await self.error("PATCH", "/api/experiments/exp1", 400, "expected a string, got a boolean @ body.description", json={"description": True})
        await self.error("PATCH", "/api/experiments/exp1", 400, "expected a list, got dict @ body.tags", json={"tags": {"a": 1}})

    async def test_delete_stops_jobs_everywhere_then_deletes_in_a_task(self) -> None:
        await self.create("exp1")
        await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": "pio1"})
        await self.call("PUT", "/api/experiments/exp1/workers", expect=200, json={"pioreactor_unit": "pio1"})
        await self.call("PUT", "/api/experiments/exp1/unit_labels", expect=201, json={"unit": "pio1", "label": "R1"})
        self.fanout.calls.clear()
        accepted = await self.call("DELETE", "/api/experiments/exp1", expect=202)
        self.assertEqual((accepted["unit"], accepted["status"]), ("leader", "pending"))
        self.assertEqual(self.fanout.calls, [("POST", ["leader", "pio1"], "/unit_api/jobs/stop", {"experiment": "exp1"})])
        result = await self.finish_task(accepted)
        self.assertEqual(result["status"], "succeeded")
        self.assertEqual((result["result"]["result"], result["result"]["experiment"], result["result"]["msg"]), (True, "exp1", "Deleted experiment"))
        self.assertEqual(
            set(result["result"]["database_space"]),
            {"page_size", "page_count", "freelist_count", "allocated_bytes", "reclaimable_bytes", "reclaimable_fraction"},
        )
        await self.error("GET", "/api/experiments/exp1", 404, "exp1")
        self.assertEqual(await self.call("GET", "/api/workers/assignments", expect=200), [{"pioreactor_unit": "pio1", "experiment": None, "is_active": 1}])
        self.assertEqual(
            await self.call("GET", "/api/experiments/exp1/historical_worker_assignments", expect=200),
            [{"pioreactor_unit": "pio1", "experiment": "exp1", "is_currently_assigned_to_experiment": 0}],
        )

    async def test_unit_labels(self) -> None:
        await self.create("exp1")
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/unit_labels", expect=200), {})
        self.assertEqual(await self.call("PUT", "/api/experiments/exp1/unit_labels", expect=201, json={"unit": "pio1", "label": "Reactor 1"}), {"status": "success"})
        await self.call("PATCH", "/api/experiments/exp1/unit_labels", expect=201, json={"unit": "pio2", "label": " Reactor 2 "})
        await self.call("PUT", "/api/experiments/exp1/unit_labels", expect=201, json={"unit": "pio1", "label": "R1"})
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/unit_labels", expect=200), {"pio1": "R1", "pio2": "Reactor 2"})
        self.assertEqual(await self.call("GET", "/api/experiments/current/unit_labels", expect=200), {"pio1": "R1", "pio2": "Reactor 2"})
        await self.call("PUT", "/api/experiments/current/unit_labels", expect=201, json={"unit": "pio1", "label": ""})
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/unit_labels", expect=200), {"pio2": "Reactor 2"})

    async def test_unit_label_errors(self) -> None:
        await self.error("GET", "/api/experiments/current/unit_labels", 404, "No experiment yet")
        await self.create("exp1")
        await self.call("PUT", "/api/experiments/exp1/unit_labels", expect=201, json={"unit": "pio1", "label": "R1"})
        await self.error("PUT", "/api/experiments/exp1/unit_labels", 409, "pio1 has the label 'R1'", json={"unit": "pio2", "label": "R1"})
        await self.error("PUT", "/api/experiments/nope/unit_labels", 404, "Experiment nope not found", json={"unit": "pio1", "label": "R1"})
        await self.error("GET", "/api/experiments/nope/unit_labels", 404, "nope")
        await self.error("PUT", "/api/experiments/exp1/unit_labels", 400, "required field missing @ body.label", json={"unit": "pio1"})
        await self.error("PUT", "/api/experiments/exp1/unit_labels", 400, "unit: $broadcast", json={"unit": "$broadcast", "label": "all"})
        await self.error("PUT", "/api/experiments/exp1/unit_labels", 400, "expected a string, got NoneType", json={"unit": "pio1", "label": None})
        self.assertEqual(await self.call("GET", "/api/experiments/exp1/unit_labels", expect=200), {"pio1": "R1"})

    async def test_methods_not_served_are_405(self) -> None:
        await self.error("PUT", "/api/experiments", 405, "PUT")
        await self.error("POST", "/api/experiments/latest", 405, "POST")
