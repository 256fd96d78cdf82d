"""Starting, refusing and stopping jobs: one of each name, options checked first, a safe stop order."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.manager import (
    AlreadyRunning,
    RunRequest,
    TooSoon,
    UnknownJob,
)
from pioreactor_appliance.jobs.settings import BadOptions

from .toys import Counter, Explodes, toy_manager


class ManagerTests(TestCase):
    async def test_unknown_jobs_and_bad_options_are_refused_before_anything_starts(
        self,
    ) -> None:
        manager, broker, clock = toy_manager(self, Counter)
        with self.assertRaises(UnknownJob):
            manager.prepare(RunRequest("stiring", "exp1"))
        for options, reason in [
            ({"interval": "soon"}, "not a number"),
            ({"interval": 0.01}, "below the minimum"),
            ({"speed": 3}, "unknown option 'speed'"),
            ({"label": True}, "expected string, got a boolean"),
            ({"interval": [1]}, "expected float, got list"),
        ]:
            with self.assertRaisesRegex(BadOptions, reason):
                manager.prepare(RunRequest("counter", "exp1", options=options))
        with self.assertRaisesRegex(BadOptions, "takes no arguments"):
            manager.prepare(RunRequest("counter", "exp1", args=["x"]))
        self.assertEqual(broker.log, [])

    async def test_dashed_names_and_text_values_work_as_cli_flags_do(self) -> None:
        manager, broker, clock = toy_manager(self, Counter)
        prepared = manager.prepare(
            RunRequest("counter", "exp1", options={"interval": "2", "label": ""})
        )
        self.assertEqual(prepared.options, {"interval": 2.0, "label": "plain"})

    async def test_never_started_twice(self) -> None:
        manager, broker, clock = toy_manager(self, Counter)
        first = manager.run(RunRequest("counter", "exp1"))
        with self.assertRaises(TooSoon):
            manager.run(RunRequest("counter", "exp2"))
        clock.advance(0.5)
        with self.assertRaises(TooSoon, msg="a refused request does not restart the second"):
            manager.check_debounce("counter")
        clock.advance(0.6)
        manager.check_debounce("counter")
        clock.advance(2)
        with self.assertRaisesRegex(AlreadyRunning, "job_id 1, experiment exp1"):
            manager.prepare(RunRequest("counter", "exp2"))
        await first
        self.assertEqual(len(manager.running_jobs()), 1)

    async def test_rows_have_the_reference_shape_and_history_keeps_ended_jobs(
        self,
    ) -> None:
        manager, broker, clock = toy_manager(self, Counter)
        await manager.run(RunRequest("counter", "exp1", source="experiment_profile"))
        [row] = [r.as_json() for r in manager.running_jobs()]
        self.assertEqual(
            set(row),
            {
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
            },
        )
        self.assertEqual(
            (row["job_source"], row["is_running"], row["ended_at"]),
            ("experiment_profile", 1, None),
        )
        clock.advance(3)
        self.assertEqual(await manager.stop(experiment="exp2"), 0)
        self.assertEqual(
            await manager.stop(experiment="exp1", job_source="experiment_profile"), 1
        )
        [ended] = manager.history()
        self.assertEqual(
            (ended.is_running, ended.ended_at), (0, "1970-01-01T00:00:03.000Z")
        )

    async def test_stop_all_stops_pumps_and_pwm_first(self) -> None:
        manager, broker, clock = toy_manager(self, Counter, Explodes)
        await manager.run(RunRequest("counter", "exp1"))
        await manager.run(RunRequest("explodes", "exp1"))
        self.assertEqual(await manager.stop_all(), 2)
        goodbyes = [
            m.topic
            for m in broker.published("pioreactor/pio1/exp1/+/$state")
            if m.payload == b"disconnected"
        ]
        self.assertEqual(
            goodbyes,
            [
                "pioreactor/pio1/exp1/explodes/$state",
                "pioreactor/pio1/exp1/counter/$state",
            ],
        )
