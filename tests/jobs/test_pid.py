"""The PID controller: proportional, integral without wind-up, derivative on the measurement, limits."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.pid import Pid


class PidTests(TestCase):
    def test_proportional_and_output_limits(self) -> None:
        pid = Pid(2.0, 0.0, 0.0, setpoint=10.0, output_limits=(-5.0, 5.0))
        self.assertEqual(pid.update(8.0, dt=1), 4.0)
        self.assertEqual(pid.update(0.0, dt=1), 5.0)
        self.assertEqual(pid.update(20.0, dt=1), -5.0)

    def test_the_derivative_acts_on_the_measurement_so_a_new_setpoint_does_not_kick(
        self,
    ) -> None:
        pid = Pid(0.0, 0.0, 3.0, setpoint=10.0)
        self.assertEqual(pid.update(5.0, dt=1), 0.0, "no history yet")
        self.assertEqual(pid.update(7.0, dt=2), -3.0, "rising 1/s is damped")
        pid.setpoint = 50.0
        self.assertEqual(pid.update(7.0, dt=1), 0.0)

    def test_the_integral_accumulates_and_does_not_wind_up(self) -> None:
        pid = Pid(0.0, 1.0, 0.0, setpoint=1.0, output_limits=(None, 3.0))
        self.assertEqual([pid.update(0.0, dt=1) for _ in range(3)], [1.0, 2.0, 3.0])
        for _ in range(100):
            pid.update(0.0, dt=1)
        self.assertEqual(
            pid.update(2.0, dt=1), 2.0, "unwinds at once from the limit, not from 100"
        )
        pid.reset()
        self.assertEqual(pid.update(0.0, dt=1), 1.0)

    def test_a_non_positive_dt_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            Pid(1.0, 0.0, 0.0, setpoint=0.0).update(1.0, dt=0)
