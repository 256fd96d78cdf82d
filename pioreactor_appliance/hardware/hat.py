"""The HAT's pin and I2C map, by HAT version (BCM numbering)."""

from __future__ import annotations

from attrs import frozen

from ..config import Config, ConfigError

# Channel -> GPIO on every HAT from 1.0; the heater is channel 5.
PWM_PINS = {1: 17, 2: 13, 3: 16, 4: 12, 5: 18}
HEATER_CHANNEL = 5
# Software PWM frequencies: stirring 200 Hz, pumps 250 Hz; the heater's 16 Hz is
# quantised by pigpiod to 20 Hz, which is what it really runs at.
STIRRING_HZ = 200
PUMP_HZ = 250
HEATER_HZ = 16
RP2040_ADDRESS = 0x2C
TMP1075_ADDRESS = 0x4F
I2C_BUS = 1


@frozen
class Hat:
    version: str
    hall_gpio: int
    button_gpio: int
    led_gpio: int = 23
    has_rp2040: bool = True

    @classmethod
    def from_config(cls, config: Config) -> Hat:
        version = (config.get("hardware", "hat_version") or "1.2").strip()
        try:
            number = tuple(int(part) for part in version.split("."))
        except ValueError:
            raise ConfigError(f"[hardware] hat_version must look like 1.2, not {version!r}") from None
        if number <= (1, 0):
            return cls(version, hall_gpio=25, button_gpio=24, has_rp2040=False)
        return cls(version, hall_gpio=21, button_gpio=4)


def channel_of(config: Config, device: str) -> int:
    """The one PWM channel ``[PWM]`` gives ``device`` (stirring, media, alt_media, waste)."""
    section = config.section("PWM")
    if section.get(str(HEATER_CHANNEL), "heating") != "heating":
        raise ConfigError(f"[PWM] channel {HEATER_CHANNEL} is the heater's, not {section[str(HEATER_CHANNEL)]!r}")
    channels = [channel for channel, name in section.items() if name == device]
    if not channels:
        raise ConfigError(f"[PWM] names no channel for {device}")
    if len(channels) > 1:
        raise ConfigError(f"[PWM] names {device} on channels {' and '.join(channels)}; give it one")
    if channels[0] not in ("1", "2", "3", "4"):
        raise ConfigError(f"[PWM] {device} must be on channel 1-4, not {channels[0]!r}")
    return int(channels[0])
