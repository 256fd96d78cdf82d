"""The OD reading: every interval, light the IR LED, sample the photodiodes, publish optical densities.

Each snapshot switches the IR LED on (and the other channels off), waits on
the clock for the LEDs to settle, takes one short burst of readings on the
hardware thread, and restores the LEDs. Per channel the burst's trimmed mean,
less the dark offset taken at start, is pulled a little toward the previous
level; OD is the signal over the smoothed reference photodiode, or an active
OD calibration's reading of it. A photodiode near the ADC's limit stops
everything: the LEDs go dark and the job stops itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from zope.interface import provider

from ..calibrations import Calibration, CalibrationError, active_calibration
from ..config import Config, ConfigError
from ..deferreds import follow
from .base import Job, JobFailed
from .leds import change_leds, hold_leds, release_leds
from .registry import IJobKind
from .settings import Option, Setting
from .states import State
from .unit_state import LED_CHANNELS

CHANNELS = ("1", "2", "3", "4")
ANGLES = ("45", "90", "135", "180")
REF = "REF"
MIN_INTERVAL = 1.0  # s: a snapshot takes about half a second
AUTO = "auto"
AUTO_START, AUTO_FLOOR = 85.0, 50.0  # % for ir_led_intensity=auto
AUTO_REF_VOLTS, AUTO_SIGNAL_VOLTS = (
    0.25,
    0.06,
)  # the levels auto aims the photodiodes below
HIGH_INTENSITY = 90.0  # % above which the IR LED ages fast: warn
SAFETY_EMA = (
    0.05  # weight of the old value in the photodiode-voltage average the limits watch
)
STOP_VOLTS, WARN_VOLTS = 3.2, 3.0
ADC_ERROR_CODE = 5  # the monitor's blink code for "ADC too high"
RELATIVE_INTENSITY_EVERY = 5  # snapshots between relative_intensity_of_ir_led reports
WARN_EVERY_SECONDS = 300.0
FIRST_REF_NAMESPACE = (
    "od_reading_first_reference_volts"  # per experiment, for unity normalisation
)


@frozen
class ODConfig:
    """``[od_reading.config]``, ``[od_config.photodiode_channel]`` and ``[leds]``, checked once at start."""

    interval: float
    ir_led_intensity: float | str
    pd_reference_ema: float
    smoothing_penalizer: float
    turn_off_leds: bool
    settle_seconds: float
    use_dark_offsets: bool
    unity_reference: bool
    rounds: int
    burst_seconds: float
    signals: dict[str, str]  # photodiode channel -> angle
    reference: str | None  # the REF channel, if any
    ir_channel: str  # the LED channel of the IR LED

    @classmethod
    def from_config(cls, config: Config, options: Mapping[str, Any]) -> ODConfig:
        section = "od_reading.config"
        if options.get("interval") is not None:
            interval = options["interval"]
        else:
            rate = options.get("samples_per_second") or config.get_float(
                section, "samples_per_second"
            )
            if not rate > 0:
                raise ConfigError(
                    f"[{section}] samples_per_second must be positive, not {rate}"
                )
            interval = 1 / rate
        check_interval(interval)
        intensity = options.get("ir_led_intensity") or config.get_str(
            section, "ir_led_intensity"
        )
        ema = config.get_float(section, "pd_reference_ema")
        if not 0 <= ema < 1:
            raise ConfigError(
                f"[{section}] pd_reference_ema is a weight in [0, 1), not {ema}"
            )
        normalisation = config.get_str(section, "ref_normalization").strip().lower()
        if normalisation not in ("classic", "unity"):
            raise ConfigError(
                f"[{section}] ref_normalization is classic or unity, not {normalisation!r}"
            )
        rounds = config.get_int(section, "sampling_rounds")
        burst = config.get_float(section, "sampling_seconds")
        if rounds < 3 or not 0 <= burst <= 0.25:
            raise ConfigError(
                f"[{section}] needs sampling_rounds >= 3 and sampling_seconds 0-0.25, not {rounds} and {burst}"
            )
        settle = config.get_float(section, "duration_between_led_off_and_od_reading")
        if not 0 <= settle <= 1:
            raise ConfigError(
                f"[{section}] duration_between_led_off_and_od_reading is 0-1 s, not {settle}"
            )
        signals, references = {}, []
        for channel, role in config.section("od_config.photodiode_channel").items():
            role = (role or "").strip().upper()
            if not role:
                continue
            if channel not in CHANNELS or role not in (REF, *ANGLES):
                raise ConfigError(
                    f"[od_config.photodiode_channel] maps channels 1-4 to REF or an angle "
                    f"({', '.join(ANGLES)}), not {channel}={role}"
                )
            if role == REF:
                references.append(channel)
            else:
                signals[channel] = role
        if len(references) > 1 or not signals:
            raise ConfigError(
                "[od_config.photodiode_channel] needs one or more angles and at most one REF"
            )
        ir = [
            channel
            for channel, role in config.section("leds").items()
            if (role or "").strip().upper() == "IR"
        ]
        if len(ir) != 1 or ir[0] not in LED_CHANNELS:
            raise ConfigError("[leds] must name exactly one of the channels A-D as IR")
        return cls(
            interval=interval,
            ir_led_intensity=parse_intensity(intensity),
            pd_reference_ema=ema,
            smoothing_penalizer=max(
                config.get_float(section, "smoothing_penalizer"), 0.0
            ),
            turn_off_leds=config.get_bool(section, "turn_off_leds_during_reading"),
            settle_seconds=settle,
            use_dark_offsets=config.get_bool(section, "use_dark_offsets"),
            unity_reference=normalisation == "unity",
            rounds=rounds,
            burst_seconds=burst,
            signals=dict(sorted(signals.items())),
            reference=references[0] if references else None,
            ir_channel=ir[0],
        )


def check_interval(interval: float) -> None:
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL):
        raise ValueError(
            f"the interval must be at least {MIN_INTERVAL:g} s, not {interval}"
        )


def parse_intensity(value: Any) -> float | str:
    """A percentage in (0, 100], or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        percent = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"ir_led_intensity is a percentage or auto, not {value!r}"
        ) from None
    if not 0 < percent <= 100:
        raise ValueError(f"ir_led_intensity is a percentage in (0, 100], not {percent}")
    return percent


def trimmed_mean(values: list[float]) -> float:
    """The mean without the lowest and highest value: one glitch does not move it."""
    kept = sorted(values)[1:-1] if len(values) > 2 else values
    return sum(kept) / len(kept)


@provider(IJobKind)
class ODReader(Job):
    job_name = "od_reading"
    help = (
        "Reads optical density from the photodiodes every interval, with the IR LED on."
    )
    stop_order = 2
    published_settings = {
        "first_od_obs_time": Setting("float", unit="s"),
        "interval": Setting("float", settable=True, unit="s"),
        "ir_led_intensity": Setting("float", settable=True, unit="%"),
        "relative_intensity_of_ir_led": Setting("RelativeIntensity"),
        "ods": Setting("ODReadings"),
        **{f"od{c}": Setting("ODReading") for c in CHANNELS},
        **{f"raw_od{c}": Setting("RawODReading") for c in CHANNELS},
        **{f"calibrated_od{c}": Setting("CalibratedODReading") for c in CHANNELS},
    }
    options = {
        "interval": Option(
            "float", help="seconds between readings", minimum=MIN_INTERVAL
        ),
        "samples_per_second": Option(
            "float", help="readings per second", minimum=1e-4, maximum=1 / MIN_INTERVAL
        ),
        "ir_led_intensity": Option("string", help="IR LED intensity in %, or auto"),
    }

    def __init__(
        self, context: Any, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self._options = options
        self.dark: dict[str, float] = {}
        self.calibrations: dict[str, Calibration] = {}  # angle -> active OD calibration
        # channel -> last smoothed volts, for the ridge pull
        self._levels: dict[str, float] = {}
        self._safety: dict[str, float] = {}  # channel -> moving average of raw volts
        self._reference: float | None = None  # the smoothed, normalised REF
        self._snapshots = 0
        self._in_flight: Deferred[None] | None = None  # the snapshot being taken
        self._pauses: set[Deferred[None]] = set()
        # LED channels darkened for the reading in progress, and their intensities
        self._restore: dict[str, float] = {}
        self._warned: dict[str, float] = {}

    # --- start and stop --------------------------------------------------

    async def on_init(self) -> None:
        try:
            self.settings = ODConfig.from_config(self.config, self._options)
        except (ConfigError, ValueError) as e:
            raise JobFailed(str(e)) from None
        self.interval = self.settings.interval
        self.photodiodes = self.hardware.photodiodes if self.hardware else None
        if self.photodiodes is None:
            raise JobFailed("od_reading: this unit's photodiode ADC is not supported")
        missing = [c for c in self.channels if int(c) not in self.photodiodes.channels]
        if missing:
            raise JobFailed(
                f"od_reading: {self.photodiodes.name} has no photodiode channel {', '.join(missing)}"
            )
        await self._load_calibrations()
        await self.photodiodes.prepare()
        self.ir_channel = self.settings.ir_channel
        intensity = self.settings.ir_led_intensity
        if intensity != AUTO:
            self._use_intensity(float(intensity))
        self.publish("interval", self.interval)
        self.loop = self.every(self.interval, self._snapshot)

    def _use_intensity(self, intensity: float) -> None:
        if intensity > HIGH_INTENSITY:
            self.log.warning(
                f"IR LED intensity {intensity:g} % is above {HIGH_INTENSITY:g} %: the LED ages faster"
            )
        mismatch = self._calibration_mismatch(intensity)
        if mismatch:
            raise JobFailed(f"od_reading: {mismatch}")
        self.ir_intensity = intensity
        self.publish("ir_led_intensity", intensity)

    async def on_ready(self) -> None:
        await self._prepare_reading()
        self.publish("first_od_obs_time", self.clock.seconds())  # the loop's first snapshot starts now

    async def _prepare_reading(self) -> None:
        """Dark offsets (and an automatic IR intensity) before the first snapshot.

        This takes a LED settle and a burst or two, so it runs just after
        ``ready`` is published (a client sees the job running within
        milliseconds) and before the loop's first snapshot; the run's task still
        waits for it, and fails with the reason if it fails.
        """
        self._hold_free_channels()
        await change_leds(self, {c: 0.0 for c in self._free_channels()}, source=self.job_name)
        await self._pause(self.settings.settle_seconds)
        dark = await self._burst()
        self.dark = {c: trimmed_mean(v) if self.settings.use_dark_offsets else 0.0 for c, v in dark.items()}
        if self.settings.ir_led_intensity == AUTO:
            self._use_intensity(await self._auto_intensity())
        release_leds(self)
        hold_leds(self, [self.ir_channel])

    async def on_sleeping(self) -> None:
        await change_leds(
            self, {self.ir_channel: 0.0}, source=self.job_name, verbose=False
        )

    async def on_disconnected(self) -> None:
        for pause in list(self._pauses):
            pause.cancel()
        if self._in_flight is not None:
            await follow(
                self._in_flight
            )  # its hardware calls and LED changes land first
        try:
            if hasattr(self, "ir_channel"):
                await change_leds(
                    self, {self.ir_channel: 0.0, **self._restore}, source=self.job_name
                )
        finally:
            release_leds(self)

    @property
    def channels(self) -> list[str]:
        """Every photodiode channel read: the signals, then REF."""
        reference = [self.settings.reference] if self.settings.reference else []
        return [*self.settings.signals, *reference]

    async def _load_calibrations(self) -> None:
        cache = self.context.unit_state.cache
        for angle in sorted(set(self.settings.signals.values())):
            try:
                calibration = await active_calibration(
                    self.context.data_dir, cache, f"od{angle}"
                )
            except CalibrationError as e:
                raise JobFailed(f"od_reading: {e}") from None
            if calibration is not None:
                self.calibrations[angle] = calibration
                self.log.info(
                    f"Using OD calibration {calibration.calibration_name} for {angle}° readings"
                )

    def _calibration_mismatch(self, intensity: float) -> str | None:
        """Why ``intensity`` cannot be used with the active calibrations, if it cannot."""
        for calibration in self.calibrations.values():
            made_at = calibration.fields.get("ir_led_intensity")
            if isinstance(made_at, (int, float)) and not math.isclose(
                made_at, intensity
            ):
                return (
                    f"OD calibration {calibration.calibration_name} was made with the IR LED at "
                    f"{made_at:g} %, not {intensity:g} %"
                )
        return None

    async def _auto_intensity(self) -> float:
        """Light at 85 %, then dim until REF and the signal sit well inside the ADC's range (never below 50 %)."""
        if len(self.settings.signals) != 1 or self.settings.reference is None:
            raise JobFailed(
                "od_reading: ir_led_intensity=auto needs one signal channel and a REF"
            )
        await change_leds(
            self, {self.ir_channel: AUTO_START}, source=self.job_name, verbose=False
        )
        await self._pause(self.settings.settle_seconds)
        volts = self._volts(await self._burst())
        await change_leds(
            self, {self.ir_channel: 0.0}, source=self.job_name, verbose=False
        )
        self._levels.clear()
        limits = [AUTO_START]
        (signal,) = self.settings.signals
        for channel, target in (
            (self.settings.reference, AUTO_REF_VOLTS),
            (signal, AUTO_SIGNAL_VOLTS),
        ):
            if volts[channel] > 0:
                limits.append(AUTO_START * target / volts[channel])
        chosen = round(max(min(limits), AUTO_FLOOR), 1)
        self.log.info(f"IR LED intensity chosen automatically: {chosen:g} %")
        return chosen

    # --- settings ----------------------------------------------------------

    def set_interval(self, value: float) -> None:
        check_interval(value)
        self.interval = value
        self.publish("interval", value)
        self.publish(
            "first_od_obs_time", self.clock.seconds()
        )  # the timer restarts from now
        self.loop.change_interval(value)

    def set_ir_led_intensity(self, value: float) -> None:
        percent = parse_intensity(value)
        assert isinstance(percent, float)
        mismatch = self._calibration_mismatch(percent)
        if mismatch:
            raise ValueError(mismatch)
        if percent > HIGH_INTENSITY:
            self.log.warning(
                f"IR LED intensity {percent:g} % is above {HIGH_INTENSITY:g} %: the LED ages faster"
            )
        self.ir_intensity = percent
        self._levels.clear()  # levels at the old intensity say nothing about the new one
        self.publish("ir_led_intensity", percent)

    # --- one snapshot ------------------------------------------------------

    def _snapshot(self) -> Deferred[None]:
        """One reading; a stop waits for it (``on_disconnected``) rather than cutting it off mid-way."""
        if self._in_flight is not None:
            return succeed(
                None
            )  # the previous snapshot is still reading: skip this tick
        d = Deferred.fromCoroutine(self._take_snapshot())
        self._in_flight = d

        def done(result: Any) -> Any:
            self._in_flight = None
            return result

        return d.addBoth(done)

    async def _take_snapshot(self) -> None:
        try:
            intensity, timestamp = self.ir_intensity, self.now_iso()
            await self._lights_for_reading(intensity)
            try:
                await self._pause(self.settings.settle_seconds)
                samples = await self._burst()
            finally:
                await self._lights_after_reading()
            if self.state is State.READY and not self.stopped:
                await self._publish_snapshot(samples, intensity, timestamp)
        except CancelledError:
            pass  # stopped while reading

    def _free_channels(self) -> list[str]:
        held = self.context.unit_state.locked_leds
        return [c for c in LED_CHANNELS if held.get(c) in (None, self.job_name)]

    def _hold_free_channels(self) -> None:
        hold_leds(self, self._free_channels())

    async def _lights_for_reading(self, intensity: float) -> None:
        """IR on; the other free channels off (and held) if so configured, remembered for afterwards."""
        changes = {self.ir_channel: intensity}
        if self.settings.turn_off_leds:
            self._hold_free_channels()
            leds = self.context.unit_state.leds
            self._restore = {
                c: leds[c]
                for c in self._free_channels()
                if c != self.ir_channel and leds[c] > 0
            }
            changes.update(dict.fromkeys(self._restore, 0.0))
        await change_leds(self, changes, source=self.job_name, verbose=False)

    async def _lights_after_reading(self) -> None:
        """IR off, the others back; once stopping, ``on_disconnected`` does this instead."""
        if self.stopped:
            return
        restore, self._restore = self._restore, {}
        try:
            await change_leds(
                self,
                {self.ir_channel: 0.0, **restore},
                source=self.job_name,
                verbose=False,
            )
        finally:
            release_leds(self)
            if not self.stopped:
                hold_leds(self, [self.ir_channel])

    def _pause(self, seconds: float) -> Deferred[None]:
        """Wait on the job's clock; a stop cancels the wait (CancelledError), so no reading hangs."""
        if self.stopped:
            return fail(CancelledError())
        d: Deferred[None] = Deferred()
        self._pauses.add(d)
        d.addBoth(lambda result: (self._pauses.discard(d), result)[1])
        self.later(seconds, lambda: None if d.called else d.callback(None))
        return d

    async def _burst(self) -> dict[str, list[float]]:
        samples = await self.photodiodes.burst(
            [int(c) for c in self.channels],
            self.settings.rounds,
            self.settings.burst_seconds,
        )
        return {str(c): values for c, values in samples.items()}

    def _volts(self, samples: dict[str, list[float]]) -> dict[str, float]:
        """Per channel: trimmed mean less the dark offset, pulled toward the previous level, floored at 0.

        The pull is a ridge penalty on the level with weight
        smoothing_penalizer / interval per sampling round: a long interval pulls less.
        """
        pull = self.settings.smoothing_penalizer / self.interval * self.settings.rounds
        volts = {}
        for channel, values in samples.items():
            level = trimmed_mean(values) - self.dark.get(channel, 0.0)
            previous = self._levels.get(channel)
            if previous is not None:
                kept = max(len(values) - 2, 1)
                level = (kept * level + pull * previous) / (kept + pull)
            self._levels[channel] = level
            volts[channel] = max(level, 0.0)
        return volts

    async def _publish_snapshot(
        self, samples: dict[str, list[float]], intensity: float, timestamp: str
    ) -> None:
        """Readings timed when the snapshot began, so they keep the interval's cadence exactly."""
        if await self._too_bright(samples):
            return
        volts = self._volts(samples)
        reference = self._normalised_reference(volts)
        if reference is None:
            self.log.warning(
                "The reference photodiode reads 0 V: is the IR LED working? No OD this time"
            )
            return
        readings = {}
        for channel, angle in self.settings.signals.items():
            od = volts[channel] / reference
            raw = {
                "calibrated": 0,
                "timestamp": timestamp,
                "angle": angle,
                "od": od,
                "channel": channel,
                "ir_led_intensity": intensity,
            }
            calibration = self.calibrations.get(angle)
            if calibration is None:
                readings[channel] = raw
                continue
            reading = {**raw, "calibrated": 1, "od": self._calibrated(calibration, od)}
            reading["calibration_name"] = calibration.calibration_name
            self.publish(f"raw_od{channel}", raw)
            self.publish(f"calibrated_od{channel}", reading)
            readings[channel] = reading
        for channel, reading in readings.items():
            self.publish(f"od{channel}", reading)
        self.publish("ods", {"timestamp": timestamp, "ods": readings})
        if self._snapshots % RELATIVE_INTENSITY_EVERY == 0:
            self._publish_relative_intensity(volts, timestamp)
        self._snapshots += 1

    def _normalised_reference(self, volts: dict[str, float]) -> float | None:
        """The REF moving average (classic: volts; unity: relative to the experiment's first REF)."""
        channel = self.settings.reference
        if channel is None:
            return 1.0
        value = volts[channel]
        if value <= 0:
            return None
        if self.settings.unity_reference:
            value /= self._first_reference(value)
        ema = self.settings.pd_reference_ema
        self._reference = (
            value
            if self._reference is None
            else ema * self._reference + (1 - ema) * value
        )
        return self._reference

    def _first_reference(self, volts: float) -> float:
        cache = self.context.unit_state.cache
        first = cache.get(FIRST_REF_NAMESPACE, self.experiment)
        if first is None:
            first = volts
            cache.set(FIRST_REF_NAMESPACE, self.experiment, volts)
        return float(first)

    def _publish_relative_intensity(
        self, volts: dict[str, float], timestamp: str
    ) -> None:
        channel = self.settings.reference
        if channel is None or volts[channel] <= 0:
            return
        relative = volts[channel] / self._first_reference(volts[channel])
        self.publish(
            "relative_intensity_of_ir_led",
            {"relative_intensity_of_ir_led": relative, "timestamp": timestamp},
        )

    def _calibrated(self, calibration: Calibration, signal: float) -> float:
        """The calibration's OD for ``signal``, held to its recorded range (with a warning now and then)."""
        low, high = calibration.y_range
        bounded = min(max(signal, low), high)
        if bounded != signal:
            self._warn_now_and_then(
                f"calibration {calibration.calibration_name}",
                f"OD signal {signal:.4g} is outside calibration {calibration.calibration_name}'s "
                f"range {low:.4g}-{high:.4g}; reporting the OD at its edge",
            )
        try:
            return calibration.y_to_x(bounded)
        except CalibrationError as e:
            self._warn_now_and_then(
                f"calibration {calibration.calibration_name}", str(e)
            )
            xs = calibration.recorded_x
            return max(xs) if bounded >= high else min(xs)

    # --- safety --------------------------------------------------------------

    async def _too_bright(self, samples: dict[str, list[float]]) -> bool:
        """Above 3.2 V (moving average) the photodiodes or ADC are at risk: LEDs off and stop."""
        worst_channel, worst = "", 0.0
        for channel, values in samples.items():
            raw = trimmed_mean(values)
            previous = self._safety.get(channel)
            average = (
                raw
                if previous is None
                else SAFETY_EMA * previous + (1 - SAFETY_EMA) * raw
            )
            self._safety[channel] = average
            if average > worst:
                worst_channel, worst = channel, average
        if worst > STOP_VOLTS:
            self._blink(ADC_ERROR_CODE)
            self.log.error(
                f"Photodiode channel {worst_channel} reads {worst:.2f} V, above {STOP_VOLTS} V: "
                "turning every LED off and stopping od_reading"
            )
            await change_leds(
                self, dict.fromkeys(self._free_channels(), 0.0), source=self.job_name
            )
            self.stop(f"photodiode channel {worst_channel} above {STOP_VOLTS} V")
            return True
        if worst > WARN_VOLTS:
            self._blink(ADC_ERROR_CODE)
            self._warn_now_and_then(
                "bright",
                f"Photodiode channel {worst_channel} reads {worst:.2f} V, close to the {STOP_VOLTS} V limit",
            )
        return False

    def _blink(self, code: int) -> None:
        self.send(
            f"pioreactor/{self.unit}/$experiment/monitor/flicker_led_with_error_code",
            str(code),
            qos=1,
        )

    def _warn_now_and_then(self, key: str, message: str) -> None:
        now = self.clock.seconds()
        if now - self._warned.get(key, -math.inf) >= WARN_EVERY_SECONDS:
            self._warned[key] = now
            self.log.warning(message)
