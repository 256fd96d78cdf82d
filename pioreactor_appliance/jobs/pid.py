"""A PID controller for the slow loops (stirring RPM), stepped by the job's own timer."""

from __future__ import annotations

from attrs import define


@define
class Pid:
    """Output = Kp·e + Ki·∫e + Kd·de/dt, clamped to ±``limit``; ``dt`` comes from the caller's clock."""

    kp: float
    ki: float
    kd: float
    setpoint: float
    limit: float
    _integral: float = 0.0
    _last_error: float | None = None

    def update(self, measured: float, dt: float) -> float:
        error = self.setpoint - measured
        if dt > 0:
            self._integral += error * dt
        derivative = (
            0.0
            if self._last_error is None or dt <= 0
            else (error - self._last_error) / dt
        )
        self._last_error = error
        output = self.kp * error + self.ki * self._integral + self.kd * derivative
        return max(-self.limit, min(self.limit, output))

    def retarget(self, setpoint: float) -> None:
        """A new setpoint starts the integral and derivative afresh."""
        self.setpoint, self._integral, self._last_error = setpoint, 0.0, None
