"""The job contract on MQTT: states, retained settings, /set, $state/set, clean stops and crashes."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.manager import RunRequest

from .toys import Counter, Explodes, FailsWhenReady, NeverStarts, toy_manager

PREFIX = "pioreactor/pio1/exp1/counter"


class JobContractTests(TestCase):
    async def start_counter(self, **options: object):  # type: ignore[no-untyped-def]
        manager, broker, clock = toy_manager(self, Counter, Explodes, NeverStarts, FailsWhenReady)
        broker.client().publish(
            f"{PREFIX}/interval/set", b"3", retain=True
        )  # a stale command from long ago
        job = await manager.run(RunRequest("counter", "exp1", options=dict(options)))
        return manager, broker, clock, job

    async def test_start_publishes_init_then_ready_and_retained_settings(self) -> None:
        manager, broker, clock, job = await self.start_counter(interval="2.5")
        states = [m.payload for m in broker.published(f"{PREFIX}/$state")]
        self.assertEqual(states, [b"init", b"ready"])
        self.assertEqual(broker.value(f"{PREFIX}/interval"), b"2.5")
        self.assertEqual(broker.value(f"{PREFIX}/count"), b"0")
        for message in broker.published(f"{PREFIX}/+"):
            self.assertEqual((message.qos, message.retain), (2, True), message.topic)
        clock.advance(2.5)
        clock.advance(2.5)
        self.assertEqual(broker.value(f"{PREFIX}/count"), b"2")

    async def test_set_changes_a_settable_setting_through_its_hook(self) -> None:
        manager, broker, clock, job = await self.start_counter()
        client = broker.client()
        client.publish(f"{PREFIX}/interval/set", b"1")
        self.assertEqual(broker.value(f"{PREFIX}/interval"), b"1.0")
        clock.advance(1)
        self.assertEqual(job.count, 1, "the loop runs at the new interval at once")
        client.publish("pioreactor/$broadcast/exp1/counter/label/set", b"fancy")
        self.assertEqual(broker.value(f"{PREFIX}/label"), b"fancy")

    async def test_bad_set_requests_are_refused_and_logged(self) -> None:
        manager, broker, clock, job = await self.start_counter()
        client = broker.client()
        client.publish(f"{PREFIX}/interval/set", b"fast")  # not a number
        client.publish(f"{PREFIX}/interval/set", b"-1")  # the hook refuses it
        client.publish(f"{PREFIX}/count/set", b"99")  # read-only
        self.assertEqual(broker.value(f"{PREFIX}/interval"), b"5.0")
        self.assertEqual(broker.value(f"{PREFIX}/count"), b"0")
        warnings = [
            m.payload for m in broker.published("pioreactor/pio1/exp1/logs/app/warning")
        ]
        self.assertEqual(len(warnings), 3)
        self.assertIn(b"not a number", warnings[0])
        self.assertIn(b"must be positive", warnings[1])
        self.assertEqual(job.state, "ready")

    async def test_pause_resume_and_stop_through_state_set(self) -> None:
        manager, broker, clock, job = await self.start_counter(interval=1)
        client = broker.client()
        client.publish(f"{PREFIX}/$state/set", b"sleeping")
        self.assertEqual(broker.value(f"{PREFIX}/$state"), b"sleeping")
        clock.advance(5)
        self.assertEqual(job.count, 0, "loops pause while sleeping")
        client.publish(f"{PREFIX}/$state/set", b"ready")
        clock.advance(1)
        self.assertEqual((job.count, job.slept, job.woke), (1, 1, 1))
        client.publish(f"{PREFIX}/$state/set", b"exploded")
        self.assertEqual(broker.value(f"{PREFIX}/$state"), b"ready")
        client.publish(f"{PREFIX}/$state/set", b"disconnected")
        await job.when_stopped()
        self.assertEqual(broker.value(f"{PREFIX}/$state"), b"disconnected")
        self.assertIsNone(
            broker.value(f"{PREFIX}/count"), "non-persistent settings are cleared"
        )
        self.assertEqual(broker.value(f"{PREFIX}/kept"), b"yes", "persistent ones stay")
        self.assertEqual(job.released, 1)
        self.assertEqual(manager.running_jobs(), [])
        clock.advance(10)
        self.assertEqual(job.count, 1)

    async def test_a_dead_connection_leaves_lost_through_the_will(self) -> None:
        manager, broker, clock, job = await self.start_counter()
        [connection] = [
            c for c in broker.connections if c.client_id == "appliance-pio1-counter"
        ]
        self.assertEqual(connection.will.topic, f"{PREFIX}/$state")
        connection.die()
        self.assertEqual(broker.value(f"{PREFIX}/$state"), b"lost")

    async def test_seeing_its_own_lost_while_alive_it_says_ready_again(self) -> None:
        manager, broker, clock, job = await self.start_counter()
        broker.client().publish(f"{PREFIX}/$state", b"lost", qos=2, retain=True)
        self.assertEqual(broker.value(f"{PREFIX}/$state"), b"ready")

    async def test_a_job_that_raises_is_stopped_and_reported_and_others_go_on(
        self,
    ) -> None:
        manager, broker, clock, counter = await self.start_counter(interval=1)
        exploding = await manager.run(RunRequest("explodes", "exp1"))
        clock.advance(1)
        clock.advance(1)
        clock.advance(1)
        await exploding.when_stopped()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(
            broker.value("pioreactor/pio1/exp1/explodes/$state"), b"disconnected"
        )
        [error] = broker.published("pioreactor/pio1/exp1/logs/app/error")
        self.assertIn(b"the motor caught fire", error.payload)
        self.assertEqual([r.job_name for r in manager.running_jobs()], ["counter"])
        clock.advance(1)
        self.assertEqual(counter.count, 4)

    async def test_a_job_that_fails_to_start_says_why_and_leaves_nothing_behind(
        self,
    ) -> None:
        manager, broker, clock, _ = await self.start_counter()
        with self.assertRaisesRegex(Exception, "no sensor at 0x4F"):
            await manager.run(RunRequest("never_starts", "exp1"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(
            broker.value("pioreactor/pio1/exp1/never_starts/$state"), b"disconnected"
        )
        self.assertEqual([r.job_name for r in manager.running_jobs()], ["counter"])

    async def test_an_error_as_it_becomes_ready_stops_it_with_no_loop_left(self) -> None:
        manager, broker, clock, _ = await self.start_counter()
        with self.assertRaisesRegex(Exception, "the LED driver did not answer"):
            await manager.run(RunRequest("fails_when_ready", "exp1"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(broker.value("pioreactor/pio1/exp1/fails_when_ready/$state"), b"disconnected")
        self.assertEqual([c for c in clock.getDelayedCalls() if c.active() and "tick" in repr(c)], [])

    async def test_a_loop_paused_mid_run_resumes_once_not_twice(self) -> None:
        _, broker, clock, job = await self.start_counter(interval=1)
        pending: Deferred[None] = Deferred()
        job.loop._f = lambda: pending  # a run that is still waiting on the hardware
        clock.advance(1)
        client = broker.client()
        client.publish(f"{PREFIX}/$state/set", b"sleeping")
        client.publish(f"{PREFIX}/$state/set", b"ready")
        job.loop._f = job.tick
        pending.callback(None)  # the old run ends after the loop restarted
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(job.count, 2, "one run per interval")
        await job.stop()
        clock.advance(5)
        self.assertEqual(job.count, 2)
