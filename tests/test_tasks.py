from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.tasks import TaskRegistry


class TaskRegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tasks = TaskRegistry(self.clock, "pio1", max_count=3, max_age=100)
        self.tasks.startService()
        self.addCleanup(self.tasks.stopService)

    def test_lifecycle_pending_running_succeeded(self) -> None:
        later: Deferred[int] = Deferred()
        task = self.tasks.submit(lambda: later)
        self.assertEqual(self.tasks.accepted(task)["status"], "pending")
        self.assertEqual(self.tasks.accepted(task)["unit"], "pio1")
        self.clock.advance(0)
        self.assertEqual(task.body()["status"], "running")
        later.callback(7)
        self.assertEqual(task.body(), {"task_id": task.task_id, "result_url_path": f"/unit_api/task_results/{task.task_id}", "status": "succeeded", "result": 7})

    def test_progress_shows_while_running_only(self) -> None:
        done: Deferred[str] = Deferred()
        seen = {"rows": 0}
        task = self.tasks.submit(lambda: done, progress=lambda: dict(seen))
        self.assertNotIn("progress", task.body())  # pending: nothing has started
        self.clock.advance(0)
        seen["rows"] = 5
        self.assertEqual(task.body()["progress"], {"rows": 5})
        seen["rows"] = 9
        self.assertEqual(task.body()["progress"], {"rows": 9})
        done.callback("ok")
        self.assertEqual(task.body(), {"task_id": task.task_id, "result_url_path": f"/unit_api/task_results/{task.task_id}", "status": "succeeded", "result": "ok"})

    def test_coroutines_run(self) -> None:
        async def work() -> str:
            return "done"

        task = self.tasks.submit(work)
        self.clock.advance(0)
        self.assertEqual(task.body()["result"], "done")

    def test_api_error_keeps_its_words(self) -> None:
        def work() -> None:
            raise ApiError(409, "Already running.", cause="the pump is busy", remediation="wait")

        task = self.tasks.submit(work)
        self.clock.advance(0)
        body = task.body()
        self.assertEqual((body["status"], body["error"], body["cause"], body["remediation"]), ("failed", "Already running.", "the pump is busy", "wait"))

    def test_unexpected_error_is_failed_and_logged(self) -> None:
        def work() -> None:
            raise ZeroDivisionError("division by zero")

        task = self.tasks.submit(work)
        self.clock.advance(0)
        self.assertEqual(task.body()["status"], "failed")
        self.assertEqual(task.body()["error"], "division by zero")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unknown_id_is_404(self) -> None:
        with self.assertRaises(ApiError) as caught:
            self.tasks.get("nope")
        self.assertEqual(caught.exception.status, 404)

    def test_finished_tasks_are_bounded_by_count(self) -> None:
        done = [self.tasks.submit(lambda: 1) for _ in range(3)]
        self.clock.advance(0)
        running = self.tasks.submit(lambda: Deferred())
        self.clock.advance(0)
        newest = self.tasks.submit(lambda: 2)
        self.clock.advance(0)
        self.tasks.prune()
        with self.assertRaises(ApiError):
            self.tasks.get(done[0].task_id)
        for task in (done[1], done[2], running, newest):
            self.assertIs(self.tasks.get(task.task_id), task)

    def test_finished_tasks_expire_but_running_ones_stay(self) -> None:
        finished = self.tasks.submit(lambda: 1)
        running = self.tasks.submit(lambda: Deferred())
        self.clock.advance(0)
        self.clock.advance(101)  # the pruner runs every max_age / 10
        with self.assertRaises(ApiError):
            self.tasks.get(finished.task_id)
        self.assertIs(self.tasks.get(running.task_id), running)

    def test_stop_cancels_running_tasks(self) -> None:
        task = self.tasks.submit(lambda: Deferred())
        self.clock.advance(0)
        self.tasks.stopService()
        self.assertEqual(task.body()["status"], "failed")
        self.assertEqual(task.body()["error"], "The task was cancelled.")
