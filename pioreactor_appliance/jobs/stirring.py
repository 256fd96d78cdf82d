"""The ``stirring`` job: the stir motor's duty cycle, held at a target RPM by a slow PID loop.

The hall sensor gives the RPM; every ``duration_between_updates_seconds`` the
job measures it, publishes it and nudges the duty cycle. A stir bar that has
stalled reads 0 RPM and is kicked back to life. With ``enable_dodging_od`` and
an ``od_reading`` job running, the stirrer slows (to
``target_rpm_during_od_reading``) around each OD snapshot, timed from the
reading's published ``interval`` and ``first_od_obs_time``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from zope.interface import provider

from ..calibrations import Calibration, CalibrationError, active_calibration
from ..hardware.connection import HardwareUnavailable
from .base import Job, JobFailed
from .context import JobContext
from .payloads import BadPayload, decode
from .pid import Pid
from .registry import IJobKind
from .settings import Option, Setting
from .states import State

SECTION = "stirring.config"
MAX_RPM = 5000.0
START_KICK_SECONDS = 0.5  # 100 % for this long when stirring starts or wakes
RESTART_KICK_SECONDS = 0.35  # 100 % for this long when starting again from 0 %
STALL_KICK_SECONDS = 0.75  # each phase of a stall kick: off, then full
STALL_DUTY_CAP = 60.0  # a stall kick never leaves the motor above this
STALL_ERROR_CODE = 4
FIRST_UPDATE_SECONDS = 6.0
PID_OUTPUT_LIMIT = 7.5  # % of duty per update
OD_SNAPSHOT_SECONDS = 1.0  # how long an OD snapshot is assumed to take
EPSILON = 1e-6


def clamp(low: float, value: float, high: float) -> float:
    return max(low, min(value, high))


@provider(IJobKind)
class Stirring(Job):
    job_name = "stirring"
    help = "Stir the vial at a target RPM"
    stop_order = 0
    published_settings = {
        "target_rpm": Setting("float", settable=True, unit="RPM"),
        "measured_rpm": Setting("MeasuredRPM", unit="RPM"),
        "duty_cycle": Setting("float", settable=True, unit="%"),
        "enable_dodging_od": Setting("boolean", settable=True),
        "currently_dodging_od": Setting("boolean"),
        "target_rpm_during_od_reading": Setting("float", settable=True, unit="RPM"),
        "target_rpm_outside_od_reading": Setting("float", settable=True, unit="RPM"),
    }
    options = {
        "target_rpm": Option(
            "float",
            help="RPM to hold ([stirring.config] initial_target_rpm)",
            minimum=0,
            maximum=MAX_RPM,
        ),
        "duty_cycle": Option(
            "float",
            help="starting duty cycle, % ([stirring.config] initial_duty_cycle)",
            minimum=0,
            maximum=100,
        ),
        "use_rpm": Option(
            "boolean", help="hold an RPM (closed loop) rather than a fixed duty cycle"
        ),
        "enable_dodging_od": Option("boolean", help="slow down around each OD reading"),
    }

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self._given = options
        self.duty = 0.0
        self.target_rpm = 0.0
        self._kick: IDelayedCall | None = None
        self._last_update = 0.0
        self._duty_outside_od = 0.0
        self._in_od_window = False
        self._dodge: IDelayedCall | None = None
        self._od: dict[str, Any] = {
            "$state": None,
            "interval": None,
            "first_od_obs_time": None,
        }

    def _option(self, name: str, config_key: str | None = None) -> Any:
        """The run option if given, else ``[stirring.config]``'s value, typed as the option is."""
        given = self._given.get(name)
        if given is not None:
            return given
        read = (
            self.config.get_bool
            if self.options[name].datatype == "boolean"
            else self.config.get_float
        )
        return read(SECTION, config_key or name)

    # --- lifecycle -------------------------------------------------------------

    async def on_init(self) -> None:
        if self.hardware is None:
            raise JobFailed("stirring needs the HAT; this unit has no hardware")
        self.use_rpm = self._option("use_rpm")
        if self.use_rpm:
            try:  # the hall sensor is on the heating PCB: no PCB, no RPM
                await self.hardware.temperature.read_celsius()
            except OSError as e:
                raise JobFailed(
                    f"no heating PCB answers ({e}), so the RPM cannot be measured; run with use_rpm false"
                ) from None
        self.initial_duty = self._option("duty_cycle", "initial_duty_cycle")
        self.period = self.config.get_float(SECTION, "duration_between_updates_seconds")
        self.pre_delay = self.config.get_float(SECTION, "pre_delay_duration")
        self.post_delay = self.config.get_float(SECTION, "post_delay_duration")
        self.pid = Pid(
            kp=self.config.get_float("stirring.pid", "Kp"),
            ki=self.config.get_float("stirring.pid", "Ki"),
            kd=self.config.get_float("stirring.pid", "Kd"),
            setpoint=0.0,
            output_limits=(-PID_OUTPUT_LIMIT, PID_OUTPUT_LIMIT),
        )
        self.calibration: Calibration | None = None
        self._calibrated_start: float | None = None
        if self.use_rpm:
            self.target_rpm = clamp(
                0, self._option("target_rpm", "initial_target_rpm"), MAX_RPM
            )
            self.publish("target_rpm", self.target_rpm)
            self.pid.retarget(self.target_rpm)
            if self._given.get("duty_cycle") is None:
                await self._start_from_calibration()
        self.duty = self.initial_duty
        self.publish("duty_cycle", self.duty)
        self.publish("currently_dodging_od", False)
        self.enabled_dodging = self._option("enable_dodging_od")
        self.publish("enable_dodging_od", self.enabled_dodging)
        self.target_during_od = self.config.get_float(
            SECTION, "target_rpm_during_od_reading"
        )
        outside = self.config.get(SECTION, "target_rpm_outside_od_reading")
        self.target_outside_od = float(outside) if outside else self.target_rpm
        if self.enabled_dodging:
            self._publish_dodging_targets()
        od_prefix = f"pioreactor/{self.unit}/{self.experiment}/od_reading"
        for name in self._od:
            self.subscribe(
                f"{od_prefix}/{name}",
                lambda message, name=name: self._on_od(name, message),
            )

    async def _start_from_calibration(self) -> None:
        """With an active stirring calibration, start at the duty it gives for the target, not a guess."""
        try:
            self.calibration = await active_calibration(
                self.context.data_dir, self.context.unit_state.cache, "stirring"
            )
            if self.calibration is not None and self.target_rpm > 0:
                self._calibrated_start = clamp(
                    0.0, self.calibration.y_to_x(self.target_rpm), 100.0
                )
                self.initial_duty = self._calibrated_start
        except CalibrationError as e:
            self.calibration = None
            self.log.warning(f"stirring calibration not used: {e}")

    def on_ready(self) -> None:
        self._last_update = self.clock.seconds()
        self._start_motor(self.duty, START_KICK_SECONDS)
        self.later(FIRST_UPDATE_SECONDS, self._first_update)

    def _first_update(self) -> Any:
        self.every(self.period, self.update, now=False)
        return self.update() if self.state is State.READY else None

    def on_sleeping(self) -> Any:
        self._cancel_kick()
        self._duty_before_sleep = self.duty
        self.publish("measured_rpm", {"measured_rpm": 0.0, "timestamp": self.now_iso()})
        return self._set_duty(0.0)

    def on_waking(self) -> None:
        self._last_update = self.clock.seconds()
        self._start_motor(self._duty_before_sleep, START_KICK_SECONDS)

    def on_disconnected(self) -> Any:
        self._cancel_kick()
        if self.hardware is None:
            return None
        # pigpiod away: the connection puts the motor in its safe state (off) when it is back
        return self.hardware.stirring.off().addErrback(
            lambda f: f.trap(HardwareUnavailable)
        )

    # --- the duty cycle --------------------------------------------------------

    def _cancel_kick(self) -> None:
        if self._kick is not None and self._kick.active():
            self._kick.cancel()
        self._kick = None

    def _set_duty(self, percent: float) -> Any:
        """Publish and write a duty cycle, ending any kick still under way."""
        self._cancel_kick()
        self.duty = clamp(0.0, round(percent, 5), 100.0)
        self.publish("duty_cycle", self.duty)
        return self.hardware.stirring.set_duty(self.duty)

    def _start_motor(self, duty: float, kick_seconds: float) -> Any:
        """Full power briefly to get the bar turning, then ``duty``."""
        if duty <= 0:
            return self._set_duty(0.0)
        self._cancel_kick()
        d = self.hardware.stirring.set_duty(100.0)
        self._kick = self.later(kick_seconds, self._set_duty, duty)
        return d

    def set_duty_cycle(self, value: float) -> Any:
        return self._set_duty(clamp(0.0, value, 100.0))

    def set_target_rpm(self, value: float) -> Any:
        if not self.use_rpm:
            raise ValueError(
                "target_rpm needs use_rpm (closed-loop stirring); change duty_cycle instead"
            )
        self.target_rpm = clamp(0.0, value, MAX_RPM)
        self.publish("target_rpm", self.target_rpm)
        self.pid.retarget(self.target_rpm)
        if self.target_rpm == 0:
            return self._set_duty(0.0)
        duty = self._calibrated_duty(self.target_rpm)
        if self.duty == 0 and self.state is State.READY:
            return self._start_motor(
                duty if duty is not None else self.initial_duty, RESTART_KICK_SECONDS
            )
        if duty is not None:
            return self._set_duty(duty)
        return None

    def _calibrated_duty(self, rpm: float) -> float | None:
        """The calibration's duty for ``rpm``, nudged toward where the loop has settled (the reference's blend)."""
        if self.calibration is None or self._calibrated_start is None:
            return None
        try:
            wanted = self.calibration.y_to_x(rpm)
        except CalibrationError:
            return None
        start = self._calibrated_start
        return clamp(0.0, 1.05 * (start - 0.9 * (start - wanted)), 100.0)

    # --- the loop --------------------------------------------------------------

    def update(self) -> Any:
        """Measure, publish, and (closed loop) correct the duty cycle or kick a stalled bar."""
        rpm = self.hardware.tachometer.rpm()
        self.publish(
            "measured_rpm", {"measured_rpm": round(rpm, 2), "timestamp": self.now_iso()}
        )
        now = self.clock.seconds()
        dt, self._last_update = now - self._last_update, now
        if not self.use_rpm or self.values.get("currently_dodging_od"):
            return None  # the OD reading's rhythm leaves too little time to tune in
        if rpm == 0 and self.target_rpm > 0:
            return self._stalled()
        return self._set_duty(self.duty + self.pid.update(rpm, dt))

    def _stalled(self) -> Any:
        self.log.warning(
            "Stirring reads 0 RPM: the stir bar may have stalled or decoupled; kicking it"
        )
        self.send(
            f"pioreactor/{self.unit}/$experiment/monitor/flicker_led_with_error_code",
            str(STALL_ERROR_CODE),
            qos=1,
        )
        after = min(1.01 * self.duty, STALL_DUTY_CAP)
        d = self._set_duty(0.0)

        def full() -> Any:
            self._kick = self.later(STALL_KICK_SECONDS, self._set_duty, after)
            return self.hardware.stirring.set_duty(100.0)

        self._kick = self.later(STALL_KICK_SECONDS, full)
        return d

    # --- dodging the OD reading ------------------------------------------------

    def _publish_dodging_targets(self) -> None:
        self.publish("target_rpm_during_od_reading", self.target_during_od)
        self.publish("target_rpm_outside_od_reading", self.target_outside_od)

    def set_enable_dodging_od(self, value: bool) -> None:
        self.enabled_dodging = value
        self.publish("enable_dodging_od", value)
        if value:
            self._publish_dodging_targets()
        else:
            self.publish("target_rpm_during_od_reading", None)
            self.publish("target_rpm_outside_od_reading", None)
        self._reconsider_dodging(restart=False)

    def set_target_rpm_during_od_reading(self, value: float) -> None:
        self.target_during_od = clamp(0.0, value, MAX_RPM)
        self.publish("target_rpm_during_od_reading", self.target_during_od)

    def set_target_rpm_outside_od_reading(self, value: float) -> None:
        self.target_outside_od = clamp(0.0, value, MAX_RPM)
        self.publish("target_rpm_outside_od_reading", self.target_outside_od)

    def _on_od(self, name: str, message: Any) -> None:
        try:
            value = (
                None
                if not message.payload
                else decode(message.payload, "string" if name == "$state" else "float")
            )
        except BadPayload:
            value = None
        self._od[name] = value
        self._reconsider_dodging(restart=name != "$state")

    def _dodging_possible(self) -> bool:
        interval, first = self._od["interval"], self._od["first_od_obs_time"]
        if not (
            self.enabled_dodging
            and self._od["$state"] == State.READY.value
            and interval
            and first is not None
        ):
            return False
        if interval - OD_SNAPSHOT_SECONDS <= self.pre_delay + self.post_delay:
            self.log.warning(
                f"Cannot dodge OD readings every {interval:g} s: it needs more than "
                f"{OD_SNAPSHOT_SECONDS + self.pre_delay + self.post_delay:g} s between readings"
            )
            return False
        return True

    def _reconsider_dodging(self, restart: bool) -> Any:
        active = self._dodging_possible()
        dodging = bool(self.values.get("currently_dodging_od"))
        if dodging and (restart or not active):
            if self._dodge is not None and self._dodge.active():
                self._dodge.cancel()
            self._dodge = None
        if active and (restart or not dodging):
            self._duty_outside_od = self.duty
            self.publish("currently_dodging_od", True)
            return self._dodge_step()
        if dodging and not active:
            self.publish("currently_dodging_od", False)
            if self._in_od_window:
                return self._after_od_reading()
        return None

    def _dodge_step(self) -> Any:
        """Act on where we are in the OD reading's cycle, and come back at its next boundary."""
        interval, first = self._od["interval"], self._od["first_od_obs_time"]
        phase = (
            self.clock.seconds() - first + EPSILON
        ) % interval  # seconds since the last snapshot began
        read_over = OD_SNAPSHOT_SECONDS + self.post_delay
        next_read_soon = interval - self.pre_delay
        if phase < read_over:
            wait, act = read_over - phase, self._before_od_reading
        elif phase < next_read_soon:
            wait, act = next_read_soon - phase, self._after_od_reading
        else:
            wait, act = interval - phase + read_over, self._before_od_reading
        self._dodge = self.later(wait, self._dodge_step)
        return act()

    def _before_od_reading(self) -> Any:
        if self._in_od_window:
            return None
        self._in_od_window = True
        self._duty_outside_od = self.duty
        if self.use_rpm:
            self.target_rpm = self.target_during_od
            self.publish("target_rpm", self.target_rpm)
        if self.state is not State.READY:
            return None
        return self._set_duty(0.0) if self.target_during_od == 0 else None

    def _after_od_reading(self) -> Any:
        if not self._in_od_window:
            return None
        self._in_od_window = False
        if self.use_rpm:
            self.target_rpm = self.target_outside_od
            self.publish("target_rpm", self.target_rpm)
            self.pid.retarget(self.target_rpm)
        if self.state is not State.READY:
            return None
        return (
            self._start_motor(self._duty_outside_od, RESTART_KICK_SECONDS)
            if self.duty == 0
            else None
        )
