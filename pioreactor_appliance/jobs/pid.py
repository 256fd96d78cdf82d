"""A discrete PID controller for jobs that steer an output toward a setpoint (heater, stirring).

The derivative acts on the measurement rather than on the error, so a change
of setpoint does not kick the output; the integral is clamped to the output
limits so it cannot wind up while the output is saturated.
"""

from __future__ import annotations

from attrs import define, field


def _clamp(value: float, limits: tuple[float | None, float | None]) -> float:
    low, high = limits
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


@define
class Pid:
    kp: float
    ki: float
    kd: float
    setpoint: float
    output_limits: tuple[float | None, float | None] = (None, None)
    _integral: float = field(default=0.0, init=False)
    _last_value: float | None = field(default=None, init=False)

    def update(self, value: float, dt: float) -> float:
        """The output for a new measurement ``value`` taken ``dt`` after the previous one."""
        if dt <= 0:
            raise ValueError(f"dt must be positive, not {dt}")
        error = self.setpoint - value
        self._integral = _clamp(
            self._integral + self.ki * error * dt, self.output_limits
        )
        slope = 0.0 if self._last_value is None else (value - self._last_value) / dt
        self._last_value = value
        return _clamp(
            self.kp * error + self._integral - self.kd * slope, self.output_limits
        )

    def retarget(self, setpoint: float) -> None:
        """A new setpoint starts afresh: the old integral was earned against the old one."""
        self.setpoint = setpoint
        self.reset()

    def reset(self) -> None:
        """Forget the history (integral and last measurement), as after a long pause."""
        self._integral, self._last_value = 0.0, None
