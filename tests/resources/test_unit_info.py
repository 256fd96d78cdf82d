from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance import __version__
from pioreactor_appliance.jobs.unit_state import PersistentCache
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.resources.task_results import TaskResultsApi
from pioreactor_appliance.resources.unit_info import UnitInfoApi
from pioreactor_appliance.store.database import Database
from pioreactor_appliance.tasks import TaskRegistry


class UnitRoutesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1767614400.123)  # 2026-01-05T12:00:00.123Z
        self.tasks = TaskRegistry(self.clock, "pio1", max_count=10, max_age=60)
        self.client = StubTreq(Router([UnitInfoApi("pio1", self.clock), TaskResultsApi(self.tasks)]))

    def get(self, path: str, method: str = "GET") -> tuple[int, Any]:
        response = self.successResultOf(self.client.request(method, "http://pio1" + path))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_health(self) -> None:
        self.assertEqual(self.get("/unit_api/health"), (200, {"status": "ok", "pioreactor_unit": "pio1", "utc_time": "2026-01-05T12:00:00.123Z"}))

    def test_version(self) -> None:
        self.assertEqual(self.get("/unit_api/versions/app"), (200, {"version": __version__}))

    def test_bad_method_and_path(self) -> None:
        self.assertEqual(self.get("/unit_api/health", "POST")[0], 405)
        self.assertEqual(self.get("/unit_api/versions/app/extra")[0], 404)
        self.assertEqual(self.get("/unit_api/versions")[0], 404)

    def test_task_result_pending_then_succeeded(self) -> None:
        task = self.tasks.submit(lambda: {"x": 1})
        code, body = self.get(f"/unit_api/task_results/{task.task_id}")
        self.assertEqual((code, body["status"], body["result_url_path"]), (202, "pending", f"/unit_api/task_results/{task.task_id}"))
        self.clock.advance(0)
        self.assertEqual(self.get(f"/unit_api/task_results/{task.task_id}"), (200, {"task_id": task.task_id, "result_url_path": f"/unit_api/task_results/{task.task_id}", "status": "succeeded", "result": {"x": 1}}))

    def test_task_result_failed_is_200_with_error(self) -> None:
        def work() -> None:
            raise ValueError("sensor unplugged")

        task = self.tasks.submit(work)
        self.clock.advance(0)
        code, body = self.get(f"/unit_api/task_results/{task.task_id}")
        self.assertEqual((code, body["status"], body["error"]), (200, "failed", "sensor unplugged"))
        self.flushLoggedErrors(ValueError)

    def test_unknown_task_is_404_json(self) -> None:
        code, body = self.get("/unit_api/task_results/not-a-task")
        self.assertEqual((code, body["error"]), (404, "Task not found."))
        self.assertIn("not-a-task", body["cause"])
        self.assertEqual(self.get("/unit_api/task_results/x", "DELETE")[0], 405)


class Connection:
    def __init__(self, connected: bool) -> None:
        self.connected = connected


class Broken:
    @property
    def connected(self) -> bool:
        raise RuntimeError("socket state unreadable")


class HealthPartsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def health(self, **parts: Any) -> tuple[int, Any]:
        client = StubTreq(Router([UnitInfoApi("pio1", self.clock, **parts)]))
        response = self.successResultOf(client.get("http://pio1/unit_api/health"))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_every_part_reports_its_state(self) -> None:
        cache = PersistentCache(Path(self.mktemp()) / "cache.json", self.clock)
        db = Database(Path(self.mktemp()), self.clock)
        code, body = self.health(broker=Connection(True), pigpiod=Connection(False), local_cache=cache, database=db)
        self.assertEqual((code, body["status"], body["pioreactor_unit"]), (200, "ok", "pio1"))
        self.assertEqual(
            body["parts"],
            {
                "broker": {"ok": True, "state": "connected"},
                "pigpiod": {"ok": False, "state": "disconnected"},
                "local_cache": {"ok": True, "state": "ok"},
                "database": {"ok": False, "state": "opening"},
            },
        )

    def test_a_failed_store_is_reported(self) -> None:
        cache = PersistentCache(Path(self.mktemp()) / "cache.json", self.clock)
        cache.last_write_error = "No space left on device"
        db = Database(Path(self.mktemp()), self.clock)
        db.open_error = OSError("disk I/O error")
        _, body = self.health(local_cache=cache, database=db)
        self.assertEqual(body["parts"]["local_cache"], {"ok": False, "state": "last write failed: No space left on device"})
        self.assertEqual(body["parts"]["database"], {"ok": False, "state": "failed to open: disk I/O error"})

    def test_a_part_that_cannot_say_is_reported_not_a_500(self) -> None:
        code, body = self.health(broker=Broken(), pigpiod=Connection(True))
        self.assertEqual(code, 200)
        self.assertEqual(body["parts"]["broker"], {"ok": False, "state": "unknown: socket state unreadable"})
        self.assertEqual(body["parts"]["pigpiod"], {"ok": True, "state": "connected"})
