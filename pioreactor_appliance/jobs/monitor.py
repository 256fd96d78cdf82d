"""The ``monitor`` job: the unit's health, its onboard LED and button, and its presence for the UI.

It runs from boot under experiment ``$experiment``; its ``$state`` (``lost``
through its connection's will) is how the UI tells a unit is online. Every
``self_check_interval_hours`` it checks disk, CPU temperature and the PWM rail
and blinks an error code on the onboard LED for what is wrong. Files and
sockets are read on a worker thread, never on the reactor.
"""

from __future__ import annotations

import os
import platform
import socket
from collections import deque
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThread
from zope.interface import provider

from .. import __version__
from ..hardware.connection import HardwareUnavailable
from .base import STATE, Job
from .context import JobContext
from .payloads import BadPayload, decode
from .registry import IJobKind
from .settings import Setting

CPU_TEMPERATURE_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
HAT_SERIAL_PATH = Path("/proc/device-tree/hat/uuid")
MACHINE_PATH = Path("/proc/device-tree/model")
NET_PATH = Path("/sys/class/net")
MIN_DISK_BYTES = 3 * 1024**3
MAX_CPU_CELSIUS = 80.0
MIN_RAIL_VOLTS = 4.8
RAIL_DIVIDER = 0.134  # the aux ADC sees the PWM rail through this divider
RP2040_AUX_CHANNEL = 1
ADS1115_AUX_INPUT = 3

# Error codes (the number of short blinks).
DISK_CODE, STIRRING_CODE, CPU_CODE, VOLTAGE_CODE = 3, 4, 6, 7

# Blink patterns: (LED on?, seconds).
OK_PATTERN = [(True, 0.14), (False, 0.14), (True, 0.14), (False, 0.45)] * 4


def error_pattern(code: int) -> list[tuple[bool, float]]:
    """A long flash, then ``code`` short ones, then a pause that separates codes."""
    return [
        (True, 2.0),
        (False, 0.25),
        *[(True, 0.25), (False, 0.25)] * code,
        (False, 5.0),
    ]


def available_disk_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def read_text(path: Path) -> str | None:
    """A small system file's text, or None where it does not exist (not a Pi, no HAT)."""
    try:
        return path.read_bytes().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_celsius() -> float | None:
    text = read_text(CPU_TEMPERATURE_PATH)
    try:
        return None if text is None else round(int(text) / 1000, 1)
    except ValueError:
        return None


def network_addresses() -> dict[str, str | None]:
    """The address the default route leaves from (a UDP connect sends nothing), and the MACs."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.254.254.254", 1))
        ipv4: str | None = probe.getsockname()[0]
    except OSError:
        ipv4 = None
    finally:
        probe.close()
    return {
        "ipv4": ipv4,
        "wlan_mac_address": read_text(NET_PATH / "wlan0" / "address"),
        "eth_mac_address": read_text(NET_PATH / "eth0" / "address"),
    }


def app_version() -> str:
    if __version__:
        return __version__
    return metadata.version("pioreactor_appliance")


@provider(IJobKind)
class Monitor(Job):
    job_name = "monitor"
    help = "Watch the unit's health; drive its onboard LED and button"
    is_long_running = True
    published_settings = {
        "computer_statistics": Setting("json"),
        "button_down": Setting("boolean"),
        "versions": Setting("json"),
        "voltage_on_pwm_rail": Setting("json"),
        "ipv4": Setting("string"),
        "wlan_mac_address": Setting("string"),
        "eth_mac_address": Setting("string"),
    }

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self._patterns: deque[list[tuple[bool, float]]] = deque()
        self._blink: IDelayedCall | None = None
        self._blinking = False

    async def on_init(self) -> None:
        self.publish("button_down", False)
        for name in ("flicker_led_with_error_code", "flicker_led_response_okay"):
            self.subscribe(
                f"{self.topic_prefix}/{name}",
                lambda message, name=name: self._on_flicker(name, message),
            )
        if self.hardware is not None:
            self.hardware.button.on_change = self._on_button
        hours = self.config.get_float("monitor.config", "self_check_interval_hours")
        self.every(hours * 3600, self.self_check, now=True, pause_when_sleeping=False)

    def on_ready(self) -> None:
        self.flicker(OK_PATTERN)
        self.run_guarded(self.publish_versions)

    def on_disconnected(self) -> Any:
        if self.hardware is None:
            return None
        self.hardware.button.on_change = None
        # pigpiod away: the connection turns the LED off when it is back
        return self.hardware.led.set(False).addErrback(
            lambda f: f.trap(HardwareUnavailable)
        )

    # --- the onboard LED --------------------------------------------------------

    def _led(self, on: bool) -> None:
        """Write the LED; a pigpiod outage skips the write, anything else stops the job."""
        if self.hardware is not None:
            self.hardware.led.set(on).addErrback(
                self.tolerate_hardware_outage
            ).addErrback(self.crash)

    def flicker(self, pattern: list[tuple[bool, float]]) -> None:
        """Play a pattern after any already under way."""
        self._patterns.append(list(pattern))
        if not self._blinking:
            self._blinking = True
            self._next_blink()

    def _next_blink(self) -> None:
        while self._patterns and not self._patterns[0]:
            self._patterns.popleft()
        if not self._patterns:
            self._blinking = False
            self._led(False)
            return
        on, seconds = self._patterns[0].pop(0)
        self._blink = self.later(seconds, self._next_blink)
        self._led(on)

    def error_code(self, code: int) -> None:
        self.flicker(error_pattern(code))

    def _on_flicker(self, name: str, message: Any) -> None:
        if name == "flicker_led_response_okay":
            self.flicker(OK_PATTERN)
            return
        try:
            code = decode(message.payload, "integer")
        except BadPayload as e:
            self.log.warning(f"monitor: not an error code to blink: {e}")
            return
        if not 1 <= code <= 20:
            self.log.warning(f"monitor: not an error code to blink: {code}")
            return
        self.error_code(code)

    # --- the button ---------------------------------------------------------------

    def _on_button(self, pressed: bool) -> None:
        self.publish("button_down", pressed)
        self.publish(STATE, self.state.value)
        self._led(pressed)

    # --- what the unit is ---------------------------------------------------------

    async def publish_versions(self) -> None:
        firmware = None
        rp2040 = self.hardware.rp2040 if self.hardware is not None else None
        if rp2040 is not None:
            try:
                major, minor = await rp2040.firmware_version()
                firmware = f"{major}.{minor}"
            except (HardwareUnavailable, OSError) as e:
                self.log.debug(f"monitor: no HAT firmware version: {e}")
        serial, machine = await deferToThread(
            lambda: (read_text(HAT_SERIAL_PATH), read_text(MACHINE_PATH))
        )
        self.publish(
            "versions",
            {
                "app": app_version(),
                "hat": self.config.get("hardware", "hat_version"),
                "firmware": firmware,
                "hat_serial": serial,
                "rpi_machine": machine or platform.machine(),
                "timestamp": self.now_iso(),
            },
        )

    # --- self-checks --------------------------------------------------------------

    async def self_check(self) -> None:
        disk, celsius = await deferToThread(
            lambda: (available_disk_bytes(self.context.data_dir), cpu_celsius())
        )
        self.publish(
            "computer_statistics",
            {
                "available_disk_space": disk,
                "cpu_temperature_celcius": celsius,
                "timestamp": self.now_iso(),
            },
        )
        if disk < MIN_DISK_BYTES:
            self.log.error(f"Only {disk / 1024**3:.1f} GB of disk space is left")
            self.error_code(DISK_CODE)
        if celsius is not None and celsius > MAX_CPU_CELSIUS:
            self.log.warning(
                f"The CPU is at {celsius:g} °C; above {MAX_CPU_CELSIUS:g} °C it throttles"
            )
            self.error_code(CPU_CODE)
        for name, value in (await deferToThread(network_addresses)).items():
            self.publish(name, value)
        await self._check_pwm_rail()

    async def _check_pwm_rail(self) -> None:
        if self.hardware is None:
            return
        try:
            if self.hardware.rp2040 is not None:
                volts = await self.hardware.rp2040.read_volts(RP2040_AUX_CHANNEL)
            elif self.hardware.ads1115 is not None:
                volts = await self.hardware.ads1115.read_input(ADS1115_AUX_INPUT)
            else:
                return
        except (HardwareUnavailable, OSError) as e:
            self.log.debug(f"monitor: could not read the PWM rail: {e}")
            return
        rail = round(volts / RAIL_DIVIDER, 2)
        self.publish(
            "voltage_on_pwm_rail", {"timestamp": self.now_iso(), "voltage": rail}
        )
        if rail <= MIN_RAIL_VOLTS:
            self.log.warning(
                f"The PWM rail is at {rail:g} V; pumps and stirring need about 5 V. Check the power supply."
            )
            self.error_code(VOLTAGE_CODE)
