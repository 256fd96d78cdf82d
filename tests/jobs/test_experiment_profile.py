"""The profile runner on a Clock: actions fire at their times against recorded fan-out calls."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.context import LeaderServices
from pioreactor_appliance.jobs.experiment_profile import ExperimentProfile
from pioreactor_appliance.jobs.manager import JobManager, RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions
from pioreactor_appliance.jobs.unit_state import PersistentCache, UnitState
from pioreactor_appliance.store import experiments, labels, workers
from pioreactor_appliance.store.profile_runs import recent_runs

from ..fakes import FakeFanOut
from ..helpers import start_database
from .broker import FakeBroker

START = 1767614400.0  # 2026-01-05T12:00:00Z
RUN = "/unit_api/jobs/run/job_name/{}"
SETTINGS = "/unit_api/jobs/settings/job_name/{}"


def _cluster(conn: sqlite3.Connection) -> None:
    """exp1 has pio1 and pio2 active and pio3 inactive; pio4 is in another experiment."""
    for experiment in ("exp1", "exp2"):
        experiments.create_experiment(conn, experiment, "", [], None, None, "2026-01-05T11:00:00.000Z")
    for unit, experiment in (("pio1", "exp1"), ("pio2", "exp1"), ("pio3", "exp1"), ("pio4", "exp2")):
        workers.add_worker(conn, unit, None, None, "2026-01-05T11:00:00.000Z")
        workers.assign(conn, unit, experiment, "2026-01-05T11:00:00.000Z")
    workers.set_active(conn, "pio3", 0)


class RunnerTestCase(TestCase):
    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.broker = FakeBroker()
        self.fanout = FakeFanOut()
        self.db = await start_database(self)
        await self.db.run(_cluster)
        self.data_dir = Path(self.mktemp())
        (self.data_dir / "experiment_profiles").mkdir(parents=True)
        cache = PersistentCache(self.data_dir / "storage" / "local_cache.json", reactor)
        self.addCleanup(cache.close)
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

    def profile(self, text: str, name: str = "demo.yaml") -> str:
        path = self.data_dir / "experiment_profiles" / name
        path.write_text(text)
        return str(path)

    async def run_profile(self, text: str, dry_run: bool = False) -> ExperimentProfile:
        options: dict[str, Any] = {"dry-run": None} if dry_run else {}
        job = await self.manager.run(RunRequest("experiment_profile", "exp1", options=options, args=["execute", self.profile(text), "exp1"]))
        assert isinstance(job, ExperimentProfile)
        return job

    def calls_after(self, seconds: float) -> list[tuple[str, list[str], str, Any]]:
        """Advance the clock by ``seconds`` and return the fan-out calls made meanwhile."""
        before = len(self.fanout.calls)
        self.clock.advance(seconds)
        return self.fanout.calls[before:]

    def running(self) -> list[str]:
        return [record.job_name for record in self.manager.running_jobs()]


SCHEDULE = """
experiment_profile_name: schedule
common:
  jobs:
    stirring:
      actions:
        - type: start
          t: 30s
          options: {target_rpm: 400}
          config_overrides: {initial_duty_cycle: 20}
        - type: update
          hours_elapsed: 0.02
          options: {target_rpm: 500}
        - type: pause
          t: 2m
        - type: resume
          t: 3m
        - type: stop
          t: 4m
pioreactors:
  pio1:
    label: first
    jobs:
      od_reading:
        actions:
          - type: start
  pio3:
    jobs:
      od_reading:
        actions:
          - type: start
"""


class ScheduleTests(RunnerTestCase):
    async def test_each_action_reaches_the_active_assigned_workers_at_its_time(self) -> None:
        job = await self.run_profile(SCHEDULE)
        env = {"EXPERIMENT": "exp1", "JOB_SOURCE": "experiment_profile"}
        self.assertEqual(
            self.calls_after(0),
            [("POST", ["pio1"], RUN.format("od_reading"), {"options": {}, "args": [], "env": env, "config_overrides": []})],
            "pio3 is inactive, so its part is skipped",
        )
        self.assertEqual(self.calls_after(29), [])
        start = {"options": {"target_rpm": 400}, "args": [], "env": env, "config_overrides": [["stirring.config", "initial_duty_cycle", "20"]]}
        self.assertEqual(self.calls_after(1), [("POST", [u], RUN.format("stirring"), start) for u in ("pio1", "pio2")])
        self.assertEqual(
            self.calls_after(42),  # 0.02 h = 72 s
            [("PATCH", [u], SETTINGS.format("stirring"), {"settings": {"target_rpm": 500}}) for u in ("pio1", "pio2")],
        )
        self.assertEqual(
            [call[3] for call in self.calls_after(48)], [{"settings": {"$state": "sleeping"}}] * 2, "pause at 2 minutes"
        )
        self.assertEqual([call[3] for call in self.calls_after(60)], [{"settings": {"$state": "ready"}}] * 2)
        self.assertEqual(
            self.calls_after(60), [("POST", [u], "/unit_api/jobs/stop", {"job_name": "stirring", "experiment": "exp1"}) for u in ("pio1", "pio2")]
        )
        await job.when_stopped()
        self.assertEqual(self.running(), [], "the profile ends after its last action")
        self.assertEqual(self.calls_after(3600), [], "and, having finished, stops nothing")

    async def test_it_publishes_its_settings_records_the_run_and_pushes_labels(self) -> None:
        job = await self.run_profile(SCHEDULE)
        prefix = "pioreactor/leader/exp1/experiment_profile"
        self.assertEqual(self.broker.value(f"{prefix}/experiment_profile_name"), b"schedule")
        self.assertEqual(self.broker.value(f"{prefix}/start_time_utc"), b"2026-01-05T12:00:00.000Z")
        self.assertEqual(self.broker.value(f"{prefix}/profile_filename"), str((self.data_dir / "experiment_profiles" / "demo.yaml").resolve()).encode())
        self.assertEqual(self.broker.value(f"{prefix}/$state"), b"ready")
        self.assertEqual(
            await self.db.read(recent_runs, "exp1"),
            [{"started_at": "2026-01-05T12:00:00.000Z", "experiment_profile_name": "schedule", "experiment": "exp1"}],
        )
        self.assertEqual(await self.db.read(labels.unit_labels, "exp1"), {"pio1": "first"})
        self.clock.advance(300)
        await job.when_stopped()
        self.assertIsNone(self.broker.value(f"{prefix}/experiment_profile_name"), "cleared when it ends")

    async def test_repeat_runs_every_interval_until_its_max_time(self) -> None:
        job = await self.run_profile(
            """
experiment_profile_name: repeat
pioreactors:
  pio2:
    jobs:
      led_intensity:
        actions:
          - type: repeat
            t: 1m
            every: 1m
            max_time: 3m
            actions:
              - type: start
                t: 10s
                options: {A: 10}
"""
        )
        times = []
        for second in range(1, 600):
            if self.calls_after(1):
                times.append(second)
        self.assertEqual(times, [70, 130, 190, 250], "rounds at 1, 2, 3 and 4 minutes, each action 10 s into its round")
        await job.when_stopped()

    async def test_false_conditions_skip_and_when_schedules_from_its_own_time(self) -> None:
        await self.run_profile(
            """
experiment_profile_name: conditions
pioreactors:
  pio2:
    jobs:
      stirring:
        actions:
          - type: start
            if: false
          - type: when
            t: 1m
            wait_until: true
            actions:
              - type: stop
                t: 1m
          - type: when
            condition: false
            actions:
              - type: start
"""
        )
        self.assertEqual(self.calls_after(60), [])
        self.assertEqual(self.calls_after(59), [])
        self.assertEqual(self.calls_after(1), [("POST", ["pio2"], "/unit_api/jobs/stop", {"job_name": "stirring", "experiment": "exp1"})])

    async def test_a_log_action_goes_to_the_experiment_log_over_mqtt(self) -> None:
        await self.run_profile(
            """
experiment_profile_name: logs
pioreactors:
  pio1:
    jobs:
      stirring:
        actions:
          - type: log
            t: 1h
            options: {message: feed the culture, level: warning}
"""
        )
        self.clock.advance(3600)
        [message] = self.broker.published("pioreactor/leader/exp1/logs/app/warning")
        self.assertEqual(json.loads(message.payload)["message"], "feed the culture")
        self.assertEqual(self.fanout.calls, [])


class StopAndDryRunTests(RunnerTestCase):
    async def test_stopping_the_job_cancels_the_rest_and_stops_what_the_profile_started(self) -> None:
        job = await self.run_profile(SCHEDULE)
        self.calls_after(60)
        await self.manager.stop(job_name="experiment_profile")
        self.assertEqual(
            self.fanout.calls[-1], ("POST", ["pio1", "pio2"], "/unit_api/jobs/stop", {"experiment": "exp1", "job_source": "experiment_profile"})
        )
        self.assertTrue(job.stopped)
        self.assertEqual(self.calls_after(24 * 3600), [], "nothing fires after the stop")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_a_dry_run_performs_nothing_and_records_no_run(self) -> None:
        job = await self.run_profile(SCHEDULE, dry_run=True)
        self.assertTrue(job.dry_run)
        self.assertEqual(self.calls_after(3600), [])
        said = [json.loads(m.payload)["message"] for m in self.broker.published("pioreactor/leader/exp1/logs/app/info")]
        self.assertIn("dry run: would start stirring on pio2 (line 7)", said)
        await job.when_stopped()
        self.assertEqual(self.fanout.calls, [], "not even the early-stop clean-up")
        self.assertEqual(await self.db.read(recent_runs, "exp1"), [])


class RefusalTests(RunnerTestCase):
    async def test_bad_arguments_are_refused_before_anything_starts(self) -> None:
        for args, reason in [
            ([], "execute <profile path> <experiment>"),
            (["run", "demo.yaml", "exp1"], "execute"),
            (["execute", "demo.txt", "exp1"], ".yaml or .yml"),
            (["execute", "demo.yaml", "a/b"], "must not contain"),
        ]:
            with self.assertRaisesRegex(BadOptions, reason):
                self.manager.prepare(RunRequest("experiment_profile", "exp1", args=args))
        self.assertEqual(ExperimentProfile.experiment_in(["execute", "x.yaml", "exp9"]), "exp9")

    async def test_an_invalid_missing_or_outside_profile_fails_the_start_saying_why(self) -> None:
        outside = Path(self.mktemp()).resolve()
        outside.mkdir()
        (outside / "evil.yaml").write_text("experiment_profile_name: x\n")
        self.profile("experiment_profile_name: bad\ncommon:\n  jobs:\n    stirring:\n      actions:\n        - type: strat\n", "bad.yaml")
        for path, reason in [
            (str(self.data_dir / "experiment_profiles" / "bad.yaml"), "line 6, common.jobs.stirring.actions\\[0\\].type: unknown action 'strat'"),
            ("missing.yaml", "cannot read the profile missing.yaml"),
            (str(outside / "evil.yaml"), "the profile must be in"),
        ]:
            self.clock.advance(2)  # past the one-second debounce
            with self.assertRaisesRegex(JobFailed, reason):
                await self.manager.run(RunRequest("experiment_profile", "exp1", args=["execute", path, "exp1"]))
        self.assertEqual(self.running(), [])
        self.assertEqual(self.fanout.calls, [])

    async def test_the_experiment_must_exist(self) -> None:
        with self.assertRaisesRegex(JobFailed, "there is no experiment exp9"):
            await self.manager.run(RunRequest("experiment_profile", "exp9", args=["execute", self.profile(SCHEDULE), "exp9"]))
        self.assertEqual(self.fanout.calls, [])

    async def test_it_runs_on_the_leader_only(self) -> None:
        self.manager._leader_services = None
        with self.assertRaisesRegex(JobFailed, "leader only"):
            await self.run_profile(SCHEDULE)


class ExpressionTests(RunnerTestCase):
    """Expressions are computed when their action is due, from the latest values the workers published."""

    def set_value(self, unit: str, job: str, setting: str, payload: str) -> None:
        self.broker.client(f"{unit}-{job}").publish(f"pioreactor/{unit}/exp1/{job}/{setting}", payload, qos=1, retain=True)

    def logged(self, level: str) -> list[str]:
        return [json.loads(m.payload)["message"] for m in self.broker.published(f"pioreactor/leader/exp1/logs/app/{level}")]

    async def test_if_decides_when_the_action_is_due_and_a_missing_value_skips_it_with_a_warning(self) -> None:
        self.set_value("pio1", "stirring", "target_rpm", "500")
        await self.run_profile(
            """
experiment_profile_name: ifs
common:
  jobs:
    stirring:
      actions:
        - type: stop
          t: 1m
          if: ${{ ::stirring:target_rpm > 400 }}
        - type: stop
          t: 2m
          if: ::stirring:target_rpm > 600
"""
        )
        self.set_value("pio2", "stirring", "target_rpm", "450")  # in time: the condition is read when the action is due
        stop = {"job_name": "stirring", "experiment": "exp1"}
        self.assertEqual(self.calls_after(60), [("POST", [u], "/unit_api/jobs/stop", stop) for u in ("pio1", "pio2")])
        self.set_value("pio2", "stirring", "target_rpm", "700")
        self.set_value("pio1", "stirring", "target_rpm", "")  # cleared: no value any more
        self.assertEqual(self.calls_after(60), [("POST", ["pio2"], "/unit_api/jobs/stop", stop)], "false on pio1 (no value), true on pio2")
        [warning] = self.logged("warning")
        self.assertIn("stop stirring on pio1 (line 10): if ${{::stirring:target_rpm > 600}} counts as false: pio1:stirring:target_rpm has no value yet", warning)

    async def test_when_waits_until_a_published_value_crosses_its_threshold(self) -> None:
        job = await self.run_profile(
            """
experiment_profile_name: when
pioreactors:
  pio1:
    jobs:
      dosing_automation:
        actions:
          - type: when
            t: 1m
            wait_until: ${{ pio1:od_reading:od1.od >= 1.5 }}
            actions:
              - type: start
                options: {automation_name: turbidostat}
              - type: log
                t: 10s
                options: {message: "OD ${{ pio1:od_reading:od1.od }} after ${{ hours_elapsed() * 60 }} minutes on ${{ unit() }}"}
"""
        )
        self.assertEqual(self.calls_after(600), [], "no value yet, then below the threshold")
        self.set_value("pio1", "od_reading", "od1", json.dumps({"od": 1.2, "timestamp": "2026-01-05T12:10:00Z"}))
        self.assertEqual(self.calls_after(300), [])
        self.set_value("pio1", "od_reading", "od1", json.dumps({"od": 1.6, "timestamp": "2026-01-05T12:15:00Z"}))
        self.assertEqual(self.calls_after(4), [], "polled every 5 s (profile_when_poll_seconds)")
        calls = self.calls_after(1)
        self.assertEqual([c[:3] for c in calls], [("POST", ["pio1"], RUN.format("dosing_automation"))])
        self.assertEqual(calls[0][3]["options"], {"automation_name": "turbidostat"})
        self.clock.advance(10)
        self.assertIn("OD 1.6 after 15.25 minutes on pio1", self.logged("notice"), "at 905 s + 10 s")
        self.assertEqual(
            [w for w in self.logged("warning") if "wait_until" in w], [self.logged("warning")[0]], "one warning for a missing value, not one per poll"
        )
        await job.when_stopped()

    async def test_repeat_while_stops_repeating_when_it_turns_false(self) -> None:
        self.set_value("pio2", "stirring", "target_rpm", "100")
        job = await self.run_profile(
            """
experiment_profile_name: ramp
inputs:
  ceiling: 400
  step: 100
pioreactors:
  pio2:
    jobs:
      stirring:
        actions:
          - type: repeat
            every: 1m
            while: ${{ pio2:stirring:target_rpm < ceiling }}
            actions:
              - type: update
                options: {target_rpm: "${{ pio2:stirring:target_rpm + step }}", note: "${{ job_name() }} in ${{ experiment() }}"}
"""
        )
        sent = []
        for _ in range(10):
            for call in self.calls_after(60):
                rpm = call[3]["settings"]["target_rpm"]
                sent.append(rpm)
                self.set_value("pio2", "stirring", "target_rpm", str(rpm))  # as the worker would publish it
        self.assertEqual(sent, [200.0, 300.0, 400.0], "computed from the value published at each round")
        self.assertEqual(self.fanout.calls[0][3]["settings"]["note"], "stirring in exp1")
        await job.when_stopped()
        self.assertEqual(self.running(), [])

    async def test_an_option_that_cannot_be_computed_skips_its_action_and_the_run_goes_on(self) -> None:
        self.set_value("pio1", "stirring", "$state", "ready")
        job = await self.run_profile(
            """
experiment_profile_name: typo
pioreactors:
  pio1:
    jobs:
      stirring:
        actions:
          - type: update
            options: {target_rpm: "${{ pio1:stirring:$state * 2 }}"}
          - type: update
            t: 1m
            options: {target_rpm: "${{ 100 + 50 }}"}
"""
        )
        self.assertEqual(self.calls_after(0), [])
        self.assertIn("update stirring on pio1 (line 8) skipped: an expression in its options: * takes numbers, not the text 'ready'", self.logged("warning"))
        self.assertEqual(self.calls_after(60), [("PATCH", ["pio1"], SETTINGS.format("stirring"), {"settings": {"target_rpm": 150.0}})])
        await job.when_stopped()

    async def test_it_follows_only_the_settings_its_expressions_name_until_it_stops(self) -> None:
        job = await self.run_profile(
            """
experiment_profile_name: follow
common:
  jobs:
    stirring:
      actions:
        - type: when
          condition: ${{ ::od_reading:od1.od > 1 or pio1:temperature_automation:temperature > 30 }}
          actions:
            - type: stop
"""
        )
        [connection] = [c for c in self.broker.connections if "experiment_profile" in c.client_id]
        followed = ["pioreactor/+/exp1/od_reading/od1", "pioreactor/+/exp1/temperature_automation/temperature"]
        self.assertEqual(sorted(t for t in connection.subscriptions if "/set" not in t and "$state" not in t), followed)
        self.set_value("pio2", "od_reading", "od1", json.dumps({"od": 1.1}))
        self.assertEqual(self.calls_after(5), [("POST", ["pio2"], "/unit_api/jobs/stop", {"job_name": "stirring", "experiment": "exp1"})])
        self.set_value("pio1", "temperature_automation", "temperature", "31")
        self.assertEqual(self.calls_after(5), [], "pio1 has no od1 yet: the whole condition is false")
        self.set_value("pio1", "od_reading", "od1", json.dumps({"od": 0.5}))
        self.assertEqual(len(self.calls_after(5)), 1)
        await job.when_stopped()
        self.assertEqual(connection.subscriptions, {})
