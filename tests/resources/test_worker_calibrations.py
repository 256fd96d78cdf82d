"""Calibrations, estimators, protocols and sessions of the workers through the leader.

In memory with an answering fan-out for the shapes, the cache and bad input; on a
real cluster of simulated Pioreactors for a calibration and a session end to end.
"""

from __future__ import annotations

import copy
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred

from pioreactor_appliance.resources.leader_cache import LeaderCache
from pioreactor_appliance.resources.worker_calibrations import WorkerCalibrationsApi

from ..cluster import ClusterTestCase
from ..fakes import FakeFanOut
from ..helpers import LeaderApiTestCase

PUMP = """\
calibration_type: simple_peristaltic_pump
calibration_name: media-1
calibrated_on_pioreactor_unit: pio1
created_at: 2026-01-05 12:00:00+00:00
curve_data_: {type: poly, coefficients: [0.0912, 0.0]}
x: Duration
y: Volume
recorded_data: {x: [10.0, 20.0], y: [0.91, 1.83]}
hz: 250.0
dc: 100.0
voltage: 12.1
"""


@define
class AnsweringFanOut(FakeFanOut):
    """A recording fan-out whose units answer ``answers[path]`` (each its own copy), or fail as ``refusals[path]`` says."""

    answers: dict[str, Any] = field(factory=dict)
    refusals: dict[str, tuple[int, str]] = field(factory=dict)

    def request(
        self, method: str, units: list[str], path: str, json: Any = None, *, timeout: float | None = None
    ) -> Deferred[dict[str, dict[str, Any]]]:
        def answer(envelopes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            for unit, envelope in envelopes.items():
                if envelope["ok"] and path in self.refusals:
                    code, message = self.refusals[path]
                    envelopes[unit] = {
                        "ok": False, "unit": unit, "error": {"kind": "http_error", "message": message},
                        "status_code": code, "retryable": code >= 500,
                    }
                elif envelope["ok"]:
                    envelope["value"] = copy.deepcopy(self.answers.get(path, {}))
            return envelopes

        return super().request(method, units, path, json, timeout=timeout).addCallback(answer)


WRITES = [
    ("POST", "/api/workers/{u}/calibrations/media_pump", {"calibration_data": PUMP}, "/unit_api/calibrations/media_pump", "calibrations"),
    ("PATCH", "/api/workers/{u}/active_calibrations/media_pump/media-1", None, "/unit_api/active_calibrations/media_pump/media-1", "calibrations"),
    ("DELETE", "/api/workers/{u}/active_calibrations/media_pump", None, "/unit_api/active_calibrations/media_pump", "active_calibrations"),
    ("DELETE", "/api/workers/{u}/calibrations/media_pump/media-1", None, "/unit_api/calibrations/media_pump/media-1", "active_calibrations"),
    ("PATCH", "/api/workers/{u}/active_estimators/od/est-1", None, "/unit_api/active_estimators/od/est-1", "estimators"),
    ("DELETE", "/api/workers/{u}/active_estimators/od", None, "/unit_api/active_estimators/od", "active_estimators"),
    ("DELETE", "/api/workers/{u}/estimators/od/est-1", None, "/unit_api/estimators/od/est-1", "estimators"),
]


class WorkerCalibrationsTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.units = AnsweringFanOut()
        self.cache = LeaderCache(self.clock, 10.0)
        return [WorkerCalibrationsApi(self.db, self.tasks, self.units, self.cache)]

    async def setUp(self) -> None:
        await self.start()
        for unit in ("pio1", "pio2", "pio3"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
        await self.call("PUT", "/api/workers/pio3/is_active", expect=200, json={"is_active": 0})

    async def result(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The task result of an A202 route, run to its end."""
        body = await self.finish_task(await self.call(method, path, expect=202, **kwargs))
        self.assertEqual(body["status"], "succeeded", body)
        return body["result"]

    async def test_a_cached_list_maps_every_worker_inactive_included_and_is_reused_for_10_s(self) -> None:
        listing = {"media_pump": [{"calibration_name": "media-1", "is_active": True, "pioreactor_unit": "x"}]}
        self.units.answers["/unit_api/calibrations"] = listing
        result = await self.result("GET", "/api/workers/$broadcast/calibrations")
        self.assertEqual(list(result), ["pio1", "pio2", "pio3"])
        self.assertEqual(result["pio2"], {"ok": True, "unit": "pio2", "value": listing})
        self.assertEqual(self.units.calls, [("GET", ["pio1", "pio2", "pio3"], "/unit_api/calibrations", None)])
        self.clock.advance(9)
        self.assertEqual(await self.result("GET", "/api/workers/$broadcast/calibrations"), result)
        self.assertEqual(await self.result("GET", "/api/workers/pio1/calibrations"), {"pio1": result["pio1"]})
        self.assertEqual(len(self.units.calls), 1)  # both hits still answered through a task
        self.clock.advance(1)
        await self.result("GET", "/api/workers/pio1/calibrations")
        self.assertEqual(self.units.calls[-1], ("GET", ["pio1"], "/unit_api/calibrations", None))

    async def test_each_cached_list_asks_its_own_unit_route(self) -> None:
        for name in ("calibration_protocols", "calibrations", "active_calibrations", "estimators", "active_estimators"):
            self.units.answers[f"/unit_api/{name}"] = {"which": name}
            result = await self.result("GET", f"/api/workers/pio2/{name}")
            self.assertEqual(result, {"pio2": {"ok": True, "unit": "pio2", "value": {"which": name}}})
            await self.result("GET", f"/api/workers/pio2/{name}")
        self.assertEqual(
            [path for _, _, path, _ in self.units.calls],
            [f"/unit_api/{name}" for name in ("calibration_protocols", "calibrations", "active_calibrations", "estimators", "active_estimators")],
        )

    async def test_a_dead_worker_fails_alone_and_is_asked_again(self) -> None:
        self.units.down.add("pio2")
        result = await self.result("GET", "/api/workers/$broadcast/estimators")
        self.assertEqual((result["pio1"]["ok"], result["pio2"]["ok"]), (True, False))
        self.assertEqual(result["pio2"]["error"]["kind"], "connection_error")
        self.units.down.clear()
        result = await self.result("GET", "/api/workers/$broadcast/estimators")
        self.assertTrue(result["pio2"]["ok"])
        self.assertEqual(self.units.calls[-1], ("GET", ["pio2"], "/unit_api/estimators", None))

    async def test_every_write_invalidates_what_it_touches_on_its_units(self) -> None:
        for method, route, body, unit_path, kind in WRITES:
            for target, asked in (("pio1", ["pio1"]), ("$broadcast", ["pio1", "pio2", "pio3"])):
                await self.result("GET", f"/api/workers/$broadcast/{kind}")  # everyone cached
                self.units.calls.clear()
                kwargs = {"json": body} if body is not None else {}
                result = await self.result(method, route.format(u=target), **kwargs)
                self.assertEqual(list(result), asked)
                expected = {"calibration_data": PUMP, "set_as_active": False} if body else None
                self.assertEqual(self.units.calls, [(method, asked, unit_path, expected)])
                await self.result("GET", f"/api/workers/$broadcast/{kind}")
                self.assertEqual(self.units.calls[-1], ("GET", asked, f"/unit_api/{kind}", None), (method, route, target))

    async def test_a_write_keeps_no_list_read_while_it_was_under_way(self) -> None:
        await self.result("GET", "/api/workers/pio1/active_calibrations")
        accepted = await self.call("PATCH", "/api/workers/pio1/active_calibrations/media_pump/media-1", expect=202)
        self.assertIsNone(self.cache.get("pio1", "active_calibrations"))
        await self.finish_task(accepted)
        self.assertIsNone(self.cache.get("pio1", "active_calibrations"))

    async def test_uncached_reads_ask_every_time(self) -> None:
        for route, unit_path in (
            ("calibrations/od90", "/unit_api/calibrations/od90"),
            ("calibrations/od90/my%20cal", "/unit_api/calibrations/od90/my%20cal"),
            ("estimators/od", "/unit_api/estimators/od"),
            ("estimators/od/e-1", "/unit_api/estimators/od/e-1"),
        ):
            self.units.calls.clear()
            for _ in range(2):
                result = await self.result("GET", f"/api/workers/$broadcast/{route}")
                self.assertEqual(list(result), ["pio1", "pio2", "pio3"])
            self.assertEqual(self.units.calls, [("GET", ["pio1", "pio2", "pio3"], unit_path, None)] * 2)

    async def test_unknown_units_and_bad_names_are_refused_before_any_unit_is_asked(self) -> None:
        for unit in ("nope", "leader", "127.0.0.1", "localhost"):
            await self.error("GET", f"/api/workers/{unit}/calibrations", 400, f"Unknown Pioreactor worker: {unit}")
            await self.error("DELETE", f"/api/workers/{unit}/active_estimators/od", 400, "Unknown Pioreactor worker")
        for name in ("%2E%2E", ".hidden", "-x", "two%20%20spaces", "%20lead", "x" * 300):
            await self.error("GET", f"/api/workers/pio1/calibrations/{name}", 400, "Missing or invalid 'device'")
            await self.error("GET", f"/api/workers/pio1/estimators/od/{name}", 400, "Missing or invalid 'estimator_name'")
            await self.error("PATCH", f"/api/workers/pio1/active_calibrations/od/{name}", 400, "Missing or invalid 'calibration_name'")
            await self.error("POST", f"/api/workers/pio1/calibrations/{name}", 400, "invalid 'device'", json={"calibration_data": PUMP})
        self.assertEqual(self.units.calls, [])

    async def test_a_new_calibration_is_checked_on_the_leader_first(self) -> None:
        for data, mention in (
            ("calibration_type: [", "YAML data is not correct"),
            (PUMP.replace("simple_peristaltic_pump", "mystery"), "unknown calibration_type 'mystery'"),
            (PUMP.replace("calibration_name: media-1", "calibration_name: ../x"), "calibration_name must be a plain name"),
            ("- a list", "YAML data is not correct"),
        ):
            await self.error("POST", "/api/workers/pio1/calibrations/media_pump", 400, mention, json={"calibration_data": data})
        await self.error("POST", "/api/workers/pio1/calibrations/stirring", 400, "stirring takes", json={"calibration_data": PUMP})
        await self.error("POST", "/api/workers/pio1/calibrations/media_pump", 400, "Invalid request body", json={"data": PUMP})
        await self.error("POST", "/api/workers/pio1/calibrations/media_pump", 400, "Invalid request body", json={"calibration_data": 3})
        await self.error("POST", "/api/workers/nope/calibrations/media_pump", 400, "Unknown Pioreactor worker", json={"calibration_data": PUMP})
        self.assertEqual(self.units.calls, [])
        body = {"calibration_data": PUMP, "set_as_active": True}
        result = await self.result("POST", "/api/workers/pio2/calibrations/media_pump", json=body)
        self.assertEqual(result, {"pio2": {"ok": True, "unit": "pio2", "value": {}}})
        self.assertEqual(self.units.calls, [("POST", ["pio2"], "/unit_api/calibrations/media_pump", body)])

    async def test_sessions_are_relayed_to_one_worker(self) -> None:
        view = {"session": {"session_id": "abc"}, "step": {"step_id": "intro"}}
        base = "/unit_api/calibrations/sessions"
        for path in (base, f"{base}/abc", f"{base}/abc/inputs", f"{base}/abc/abort"):
            self.units.answers[path] = view
        start = {"target_device": "media_pump", "protocol_name": "duration_based", "extra": 1}
        self.assertEqual(await self.call("POST", "/api/workers/pio3/calibrations/sessions", expect=201, json=start), view)
        self.assertEqual(await self.call("GET", "/api/workers/pio3/calibrations/sessions/abc", expect=200), view)
        inputs = {"inputs": {"hz": 250}}
        self.assertEqual(await self.call("POST", "/api/workers/pio3/calibrations/sessions/abc/inputs", expect=200, json=inputs), view)
        self.assertEqual(await self.call("POST", "/api/workers/pio3/calibrations/sessions/abc/inputs", expect=200), view)
        self.assertEqual(await self.call("POST", "/api/workers/pio3/calibrations/sessions/abc/abort", expect=200), view)
        self.assertEqual(
            self.units.calls,
            [
                ("POST", ["pio3"], base, start),
                ("GET", ["pio3"], f"{base}/abc", None),
                ("POST", ["pio3"], f"{base}/abc/inputs", inputs),
                ("POST", ["pio3"], f"{base}/abc/inputs", {}),
                ("POST", ["pio3"], f"{base}/abc/abort", None),
            ],
        )
        self.assertEqual(self.units.timeouts, [30.0, None, 300.0, 300.0, None])

    async def test_session_errors_tell_what_happened(self) -> None:
        self.units.refusals["/unit_api/calibrations/sessions/gone"] = (404, "Calibration session not found.")
        await self.error("GET", "/api/workers/pio1/calibrations/sessions/gone", 404, "Calibration session not found.")
        self.units.refusals["/unit_api/calibrations/sessions"] = (400, "Missing 'target_device'.")
        await self.error("POST", "/api/workers/pio1/calibrations/sessions", 400, "Missing 'target_device'.", json={})
        self.units.refusals["/unit_api/calibrations/sessions/crash/abort"] = (500, "Internal error.")
        await self.error("POST", "/api/workers/pio1/calibrations/sessions/crash/abort", 424, "Internal error.")
        self.units.down.add("pio2")
        body = await self.error("GET", "/api/workers/pio2/calibrations/sessions/abc", 424, "Could not reach pio2")
        self.assertIn("reachable", body["remediation"])
        self.units.calls.clear()
        start = {"target_device": "media_pump", "protocol_name": "duration_based"}
        await self.error("POST", "/api/workers/$broadcast/calibrations/sessions", 400, "$broadcast is not accepted here", json=start)
        await self.error("POST", "/api/workers/nope/calibrations/sessions", 400, "Unknown Pioreactor worker: nope", json=start)
        await self.error("POST", "/api/workers/pio1/calibrations/sessions", 400, "Missing JSON payload", json=[1])
        await self.error("POST", "/api/workers/pio1/calibrations/sessions/abc/inputs", 400, "Missing JSON payload", json="x")
        await self.error("GET", "/api/workers/pio1/calibrations/sessions/%2E%2E", 400, "Missing or invalid 'session_id'")
        await self.error("POST", "/api/workers/$broadcast/calibrations/sessions/abc/abort", 400, "$broadcast")
        self.assertEqual(self.units.calls, [])


class WorkerCalibrationsClusterTests(ClusterTestCase):
    """A calibration made on one real worker through the leader, read back through the cached list; a session step."""

    async def test_a_calibration_and_a_session_through_the_leader(self) -> None:
        await self.start_cluster(["pio1", "pio2"], simulated=True)
        accepted = await self.call(
            "POST", "leader", "/api/workers/pio1/calibrations/media_pump", expect=202,
            json={"calibration_data": PUMP, "set_as_active": True},
        )
        created = await self.wait_for_result(accepted)
        self.assertEqual(created["status"], "succeeded", created)
        self.assertEqual(list(created["result"]), ["pio1"])
        self.assertEqual(created["result"]["pio1"]["value"]["msg"], "Calibration created successfully.")

        listed = await self.wait_for_result(await self.call("GET", "leader", "/api/workers/$broadcast/calibrations", expect=202))
        self.assertEqual(list(listed["result"]), ["leader", "pio1", "pio2"])  # the leader is registered as a worker here
        mine = {c["calibration_name"]: c for c in listed["result"]["pio1"]["value"]["media_pump"]}
        self.assertTrue(mine["media-1"]["is_active"])
        self.assertEqual(mine["media-1"]["pioreactor_unit"], "pio1")
        others = [c["calibration_name"] for c in listed["result"]["pio2"]["value"]["media_pump"]]
        self.assertNotIn("media-1", others)

        view = await self.call(
            "POST", "leader", "/api/workers/pio2/calibrations/sessions", expect=201,
            json={"target_device": "alt_media_pump", "protocol_name": "duration_based"},
        )
        session = view["session"]["session_id"]
        first = view["step"]["step_id"]
        path = f"/api/workers/pio2/calibrations/sessions/{session}"
        view = await self.call("POST", "leader", f"{path}/inputs", expect=200, json={"inputs": {}})
        self.assertEqual(view["step"]["step_id"], "pwm_settings")
        self.assertNotEqual(first, "pwm_settings")
        again = await self.call("GET", "leader", path, expect=200)
        self.assertEqual(again["session"], view["session"])
        error = await self.call("GET", "leader", "/api/workers/pio1/calibrations/sessions/" + session, expect=404)
        self.assertIn("not found", error["error"])  # pio1 has no such session: its 404 is relayed
        aborted = await self.call("POST", "leader", f"{path}/abort", expect=200)
        self.assertEqual(aborted["session"]["status"], "aborted")
