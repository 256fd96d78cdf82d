"""The stirring job on a simulated Pioreactor: it finds its RPM, follows /set, sleeps, kicks a stall, dodges OD."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance.calibrations import ACTIVE_NAMESPACE, calibration_path
from pioreactor_appliance.hardware.sim.model import MAX_RPM, STALL_DUTY
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.stirring import Stirring

from .simulated import SimulatedUnit, simulated_unit

PREFIX = "pioreactor/pio1/exp1/stirring"
PERIOD = 23.0


def sim_rpm(duty_percent: float) -> float:
    """The simulator's settled RPM for a duty cycle."""
    fraction = duty_percent / 100
    return (
        MAX_RPM * (fraction - STALL_DUTY) / (1 - STALL_DUTY)
        if fraction > STALL_DUTY
        else 0.0
    )


class StirringTests(TestCase):
    async def start(self, **options: object) -> tuple[SimulatedUnit, Stirring]:
        unit = await simulated_unit(self, Registry({"stirring": Stirring}))
        job = await unit.manager.run(
            RunRequest("stirring", "exp1", options=dict(options))
        )
        await unit.settle()
        self.started = unit.clock.seconds()
        return unit, job

    async def through_update(self, unit: SimulatedUnit, n: int) -> None:
        """Just past the ``n``-th update (the first is 6 s after start): coarse steps, then fine ones with hall edges."""
        due = self.started + 6 + n * PERIOD + 0.05 - unit.clock.seconds()
        if due > 3:
            await unit.advance(due - 3, step=due - 3, edges=True)
        fine = min(3.0, due)
        await unit.advance(fine - 0.1, step=0.1, edges=True)
        await deferLater(
            reactor, 0.02
        )  # every edge so far reported, even on a busy machine
        await unit.settle(edges=True)
        await unit.advance(0.1, step=0.1, edges=True)

    def measured(self, unit: SimulatedUnit) -> float:
        return json.loads(unit.broker.value(f"{PREFIX}/measured_rpm"))["measured_rpm"]

    async def test_reaches_its_target_rpm_within_five_percent(self) -> None:
        unit, job = await self.start()
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_rpm"), b"500.0")
        self.assertEqual(
            unit.model.board.duty_fraction(17), 1.0, "starts with a full-power kick"
        )
        await unit.advance(0.5, step=0.5)
        self.assertAlmostEqual(unit.model.board.duty_fraction(17), 0.30, places=3)
        await self.through_update(unit, 0)
        first = json.loads(unit.broker.value(f"{PREFIX}/measured_rpm"))
        self.assertEqual(list(first), ["measured_rpm", "timestamp"])
        self.assertTrue(first["timestamp"].endswith("Z"))
        self.assertLess(
            abs(first["measured_rpm"] - sim_rpm(30)) / sim_rpm(30), 0.1, first
        )  # still slowing from the kick
        for n in range(1, 25):
            await self.through_update(unit, n)
        self.assertLess(abs(self.measured(unit) - 500) / 500, 0.05, self.measured(unit))
        duty = float(unit.broker.value(f"{PREFIX}/duty_cycle"))
        self.assertGreater(duty, 38)
        await job.stop()
        self.assertEqual(unit.model.board.duty_fraction(17), 0.0, "off once stopped")
        self.assertIsNone(unit.broker.value(f"{PREFIX}/duty_cycle"))

    async def test_set_target_rpm_and_bad_payloads(self) -> None:
        unit, _job = await self.start(target_rpm=400)
        await self.through_update(unit, 0)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/target_rpm/set", b"900")
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_rpm"), b"900.0")
        client.publish(f"{PREFIX}/target_rpm/set", b"99999")
        self.assertEqual(
            unit.broker.value(f"{PREFIX}/target_rpm"), b"5000.0", "clamped to 0-5000"
        )
        client.publish(f"{PREFIX}/target_rpm/set", b"900")
        before = float(unit.broker.value(f"{PREFIX}/duty_cycle"))
        await self.through_update(unit, 1)
        self.assertGreater(
            float(unit.broker.value(f"{PREFIX}/duty_cycle")),
            before,
            "the PID pushes towards 900",
        )
        for bad in (b"fast", b"nan", b"", b"\xff"):
            client.publish(f"{PREFIX}/target_rpm/set", bad)
            client.publish(f"{PREFIX}/duty_cycle/set", bad)
        client.publish(f"{PREFIX}/measured_rpm/set", b'{"measured_rpm": 1}')
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_rpm"), b"900.0")
        warnings = unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")
        self.assertEqual(len(warnings), 9, [w.payload for w in warnings])
        client.publish(f"{PREFIX}/duty_cycle/set", b"150")
        await unit.settle()
        self.assertEqual(unit.broker.value(f"{PREFIX}/duty_cycle"), b"100.0")
        self.assertEqual(unit.model.board.duty_fraction(17), 1.0)

    async def test_bad_options_are_refused(self) -> None:
        unit = await simulated_unit(self, Registry({"stirring": Stirring}))
        for options in (
            {"target_rpm": -1},
            {"target_rpm": "fast"},
            {"duty_cycle": 101},
            {"rpm": 3},
        ):
            with self.assertRaises(ValueError):
                unit.manager.prepare(RunRequest("stirring", "exp1", options=options))

    async def test_sleeps_and_wakes(self) -> None:
        unit, job = await self.start()
        await self.through_update(unit, 0)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/$state/set", b"sleeping")
        await unit.settle()
        self.assertEqual(unit.model.board.duty_fraction(17), 0.0)
        self.assertEqual(self.measured(unit), 0.0)
        updates = len(unit.broker.published(f"{PREFIX}/measured_rpm"))
        await unit.advance(60, step=60)
        self.assertEqual(
            len(unit.broker.published(f"{PREFIX}/measured_rpm")),
            updates,
            "no updates while asleep",
        )
        client.publish(f"{PREFIX}/$state/set", b"ready")
        await unit.settle()
        self.assertEqual(unit.model.board.duty_fraction(17), 1.0, "kicked on waking")
        await unit.advance(0.5, step=0.5)
        self.assertAlmostEqual(
            unit.model.board.duty_fraction(17) * 100, job.duty, places=2
        )
        self.assertGreater(job.duty, 25)

    async def test_a_stall_is_reported_and_kicked(self) -> None:
        unit, _job = await self.start()
        await self.through_update(unit, 0)
        unit.broker.client().publish(
            f"{PREFIX}/duty_cycle/set", b"10"
        )  # below the simulated motor's stall duty
        await unit.settle()
        await self.through_update(unit, 1)
        self.assertEqual(self.measured(unit), 0.0)
        flickers = unit.broker.published(
            "pioreactor/pio1/$experiment/monitor/flicker_led_with_error_code"
        )
        self.assertEqual([m.payload for m in flickers], [b"4"])
        self.assertEqual(unit.model.board.duty_fraction(17), 0.0, "off first")
        await unit.advance(0.75, step=0.75)
        self.assertEqual(unit.model.board.duty_fraction(17), 1.0, "then full power")
        await unit.advance(0.75, step=0.75)
        self.assertAlmostEqual(
            unit.model.board.duty_fraction(17),
            0.101,
            places=3,
            msg="then 1.01 x the duty",
        )
        warnings = [
            json.loads(m.payload)["message"]
            for m in unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")
        ]
        self.assertTrue(any("stalled" in w for w in warnings), warnings)

    async def test_dodges_od_readings(self) -> None:
        unit, _job = await self.start(enable_dodging_od=True)
        self.assertEqual(
            unit.broker.value(f"{PREFIX}/target_rpm_during_od_reading"), b"0.0"
        )
        await unit.advance(1, step=1)
        self.assertEqual(unit.broker.value(f"{PREFIX}/currently_dodging_od"), b"False")
        od = unit.broker.client("od")
        first = unit.clock.seconds() + 1  # the first snapshot, in 1 s
        od.publish("pioreactor/pio1/exp1/od_reading/interval", b"10.0", retain=True)
        od.publish(
            "pioreactor/pio1/exp1/od_reading/first_od_obs_time",
            str(first).encode(),
            retain=True,
        )
        od.publish("pioreactor/pio1/exp1/od_reading/$state", b"ready", retain=True)
        await unit.settle()
        self.assertEqual(unit.broker.value(f"{PREFIX}/currently_dodging_od"), b"True")
        self.assertEqual(
            unit.model.board.duty_fraction(17),
            0.0,
            "within 1.5 s of a reading: stopped",
        )
        # the reading at `first` takes 1 s, then 0.5 s post delay: back on at first + 1.5
        await unit.advance(first + 1.4 - unit.clock.seconds(), step=0.1)
        self.assertEqual(unit.model.board.duty_fraction(17), 0.0)
        await unit.advance(0.2, step=0.2)
        self.assertEqual(
            unit.model.board.duty_fraction(17),
            1.0,
            "restarted with a kick after the reading",
        )
        await unit.advance(0.5, step=0.5)
        self.assertAlmostEqual(unit.model.board.duty_fraction(17), 0.30, places=3)
        await unit.advance(first + 8.4 - unit.clock.seconds(), step=0.5)
        self.assertGreater(
            unit.model.board.duty_fraction(17), 0.2, "running between readings"
        )
        await unit.advance(0.2, step=0.2)
        self.assertEqual(
            unit.model.board.duty_fraction(17),
            0.0,
            "stopped 1.5 s before the next reading",
        )
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_rpm"), b"0.0")
        od.publish(
            "pioreactor/pio1/exp1/od_reading/$state", b"disconnected", retain=True
        )
        await unit.settle()
        self.assertEqual(unit.broker.value(f"{PREFIX}/currently_dodging_od"), b"False")
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_rpm"), b"500.0")
        await unit.advance(0.5, step=0.5)
        self.assertAlmostEqual(
            unit.model.board.duty_fraction(17),
            0.30,
            places=3,
            msg="back to stirring when OD stops",
        )


class CalibratedStirringTests(TestCase):
    async def test_an_active_calibration_picks_the_starting_duty_and_follows_new_targets(
        self,
    ) -> None:
        unit = await simulated_unit(self, Registry({"stirring": Stirring}))
        # The simulator's own curve: RPM = 22.5 x DC - 450 above the stall duty.
        path = calibration_path(unit.data_dir, "stirring", "sim")
        path.parent.mkdir(parents=True)
        path.write_text(
            "calibration_type: simple_stirring\ncalibration_name: sim\ncurve_data_: {type: poly, coefficients: [22.5, -450.0]}\n"
            "recorded_data: {x: [30, 50, 70, 90], y: [225, 675, 1125, 1575]}\npwm_hz: 200\n",
            encoding="utf-8",
        )
        await unit.manager.unit_state.cache.set(ACTIVE_NAMESPACE, "stirring", "sim")
        job = await unit.manager.run(
            RunRequest("stirring", "exp1", options={"target_rpm": 500})
        )
        await unit.advance(0.5, step=0.5)
        self.assertAlmostEqual(
            unit.model.board.duty_fraction(17) * 100, 950 / 22.5, places=1
        )
        await unit.advance(5, step=0.1, edges=True)
        self.assertLess(
            abs(unit.hardware.tachometer.rpm() - 500) / 500,
            0.05,
            "on target from the start",
        )
        unit.broker.client().publish(f"{PREFIX}/target_rpm/set", b"800")
        await unit.settle()
        start, wanted = 950 / 22.5, 1250 / 22.5
        self.assertAlmostEqual(
            job.duty, 1.05 * (start - 0.9 * (start - wanted)), places=2
        )
        await job.stop()
