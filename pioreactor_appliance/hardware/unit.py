"""Everything on one Pioreactor that the jobs drive, built from the config and the reactor model."""

from __future__ import annotations

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from ..config import Config, ConfigError
from ..models import BUILT_IN_MODELS, Model, find_model
from .connection import PigpioConnection
from .hat import (
    HEATER_CHANNEL,
    HEATER_HZ,
    PUMP_HZ,
    PWM_PINS,
    STIRRING_HZ,
    Hat,
    channel_of,
)
from .outputs import Heater, Pump, PwmOutput
from .panel import Button, OnboardLed
from .photodiodes import Photodiodes, photodiodes_for
from .sensors import Ads1115, Dac43608, Rp2040, Tmp1075
from .tachometer import Tachometer

PUMPS = ("media", "alt_media", "waste")


def model_of(config: Config) -> Model:
    """``[hardware] model`` and ``model_version``; the heater's limits come from it."""
    name = config.get_str("hardware", "model")
    version = config.get_str("hardware", "model_version")
    model = find_model(name, version)
    if model is not None:
        return model
    known = ", ".join(f"{m.name} {m.version}" for m in BUILT_IN_MODELS)
    raise ConfigError(f"[hardware] model {name} {version} is not a known model; known: {known}")


@frozen
class HardwareSettings:
    """The config's say on the hardware, checked once at start-up."""

    hat: Hat
    model: Model
    pins: dict[str, int]
    heater_max_duty: float
    pump_max_seconds: float

    @classmethod
    def from_config(cls, config: Config) -> HardwareSettings:
        pins = {name: PWM_PINS[channel_of(config, name)] for name in ("stirring", *PUMPS)}
        heater_max_duty = config.get_float("hardware", "heater_max_duty")
        if not 0 <= heater_max_duty <= 100:
            raise ConfigError(f"[hardware] heater_max_duty is a percentage, not {heater_max_duty}")
        return cls(Hat.from_config(config), model_of(config), pins, heater_max_duty, config.get_float("hardware", "pump_max_seconds"))


@frozen
class Hardware:
    """What the jobs drive; building it registers every output's safe state with the connection."""

    stirring: PwmOutput
    heater: Heater
    pumps: dict[str, Pump]
    tachometer: Tachometer
    led: OnboardLed
    button: Button
    rp2040: Rp2040 | None
    ads1115: Ads1115 | None
    leds: Rp2040 | Dac43608
    temperature: Tmp1075
    photodiodes: Photodiodes | None = None  # None: this HAT's photodiode ADC is not supported

    @classmethod
    def build(cls, connection: PigpioConnection, settings: HardwareSettings, clock: IReactorTime) -> Hardware:
        pins, model = settings.pins, settings.model
        rp2040 = Rp2040(connection) if settings.hat.has_rp2040 else None
        return cls(
            stirring=PwmOutput(connection, "stirring", pins["stirring"], STIRRING_HZ),
            heater=Heater(
                connection,
                PWM_PINS[HEATER_CHANNEL],
                HEATER_HZ,
                max_duty=settings.heater_max_duty,
                disable_above=model.max_temp_to_disable_heating,
                resume_below=model.max_temp_to_reduce_heating,
            ),
            pumps={name: Pump(connection, name, pins[name], PUMP_HZ, clock, max_seconds=settings.pump_max_seconds) for name in PUMPS},
            tachometer=Tachometer(connection, settings.hat.hall_gpio, clock),
            led=OnboardLed(connection, settings.hat.led_gpio),
            button=Button(connection, settings.hat.button_gpio),
            rp2040=rp2040,
            ads1115=None if rp2040 else Ads1115(connection),
            leds=rp2040 or Dac43608(connection),
            temperature=Tmp1075(connection),
            photodiodes=photodiodes_for(connection, model.name, model.version, rp2040),
        )
