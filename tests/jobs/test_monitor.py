"""The monitor job: its settings' shapes, LED codes on the simulated unit, the button, and presence on a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance import __version__
from pioreactor_appliance.jobs import monitor
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.monitor import Monitor
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.mqtt import MqttClient

from ..cluster import ClusterTestCase
from .simulated import SimulatedUnit, simulated_unit

PREFIX = "pioreactor/pio1/$experiment/monitor"
LED = 23
BUTTON = 4


async def eventually(check: Callable[[], Any], what: str) -> None:
    """Off-thread reads land on the real reactor; wait (in real time) for their result."""
    for _ in range(300):
        if check():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"never happened: {what}")


class MonitorTests(TestCase):
    async def start(self) -> tuple[SimulatedUnit, Monitor]:
        unit = await simulated_unit(self, Registry({"monitor": Monitor}))
        job = await unit.manager.run(RunRequest("monitor", "exp1"))
        await eventually(
            lambda: unit.broker.value(f"{PREFIX}/voltage_on_pwm_rail"),
            "the first self-check",
        )
        return unit, job

    async def led_levels(
        self, unit: SimulatedUnit, seconds: float, step: float = 0.05
    ) -> list[int]:
        levels = []
        for _ in range(round(seconds / step)):
            await unit.advance(step, step=step)
            levels.append(unit.model.board.levels[LED])
        return levels

    def rising_edges(self, levels: list[int]) -> list[int]:
        return [i for i in range(1, len(levels)) if levels[i] and not levels[i - 1]]

    async def test_publishes_its_settings_in_the_reference_shapes(self) -> None:
        unit, job = await self.start()
        self.assertEqual(
            job.experiment,
            "$experiment",
            "a long-running job, whatever experiment it was asked for",
        )
        self.assertEqual(unit.broker.value(f"{PREFIX}/$state"), b"ready")
        self.assertEqual(unit.broker.value(f"{PREFIX}/button_down"), b"False")
        stats = json.loads(unit.broker.value(f"{PREFIX}/computer_statistics"))
        self.assertEqual(
            list(stats),
            ["available_disk_space", "cpu_temperature_celcius", "timestamp"],
        )
        self.assertIsInstance(stats["available_disk_space"], int)
        rail = json.loads(unit.broker.value(f"{PREFIX}/voltage_on_pwm_rail"))
        self.assertEqual(list(rail), ["timestamp", "voltage"])
        self.assertLessEqual(abs(rail["voltage"] - 5.0), 0.02)
        await eventually(
            lambda: unit.broker.value(f"{PREFIX}/versions"), "the versions"
        )
        versions = json.loads(unit.broker.value(f"{PREFIX}/versions"))
        self.assertEqual(
            list(versions),
            ["app", "hat", "firmware", "hat_serial", "rpi_machine", "timestamp"],
        )
        self.assertEqual((versions["app"], versions["hat"]), (__version__, "1.2"))
        self.assertRegex(versions["firmware"], r"^\d+\.\d+$")
        for message in unit.broker.published(f"{PREFIX}/+"):
            self.assertEqual((message.qos, message.retain), (2, True), message.topic)

    async def test_blinks_ok_then_an_error_code(self) -> None:
        unit, _ = await self.start()
        ok = await self.led_levels(unit, 4.0)
        self.assertEqual(
            len(self.rising_edges([0, *ok])), 8, "the OK pattern: four double blinks"
        )
        self.assertEqual(ok[-1], 0)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/flicker_led_with_error_code", b"oops")
        client.publish(f"{PREFIX}/flicker_led_with_error_code", b"2")
        await unit.settle()
        code = await self.led_levels(unit, 8.5)
        self.assertEqual(code[:35], [1] * 35, "a long flash first")
        self.assertEqual(len(self.rising_edges([0, *code])), 3, "then two short blinks")
        self.assertEqual(code[-40:], [0] * 40, "then a pause")
        warnings = unit.broker.published("pioreactor/pio1/$experiment/logs/app/warning")
        self.assertIn("oops", json.loads(warnings[-1].payload)["message"])

    async def test_low_disk_and_a_hot_cpu_blink_their_codes(self) -> None:
        hot = Path(self.mktemp())
        hot.write_text("85123\n")
        self.patch(monitor, "CPU_TEMPERATURE_PATH", hot)
        self.patch(monitor, "available_disk_bytes", lambda path: 2 * 1024**3)
        codes: list[int] = []
        blink = Monitor.error_code
        self.patch(
            Monitor,
            "error_code",
            lambda job, code: (codes.append(code), blink(job, code)),
        )
        unit, _ = await self.start()
        stats = json.loads(unit.broker.value(f"{PREFIX}/computer_statistics"))
        self.assertEqual(
            (stats["available_disk_space"], stats["cpu_temperature_celcius"]),
            (2 * 1024**3, 85.1),
        )
        self.assertEqual(codes, [3, 6])
        errors = [
            json.loads(m.payload)["message"]
            for m in unit.broker.published("pioreactor/pio1/$experiment/logs/app/error")
        ]
        self.assertTrue(any("disk space" in e for e in errors), errors)

    async def test_no_thermal_zone_reads_as_null(self) -> None:
        self.patch(monitor, "CPU_TEMPERATURE_PATH", Path(self.mktemp()))
        unit, _ = await self.start()
        self.assertIsNone(
            json.loads(unit.broker.value(f"{PREFIX}/computer_statistics"))[
                "cpu_temperature_celcius"
            ]
        )

    async def test_button_press_and_release(self) -> None:
        unit, _ = await self.start()
        await self.led_levels(unit, 4.0, step=0.5)  # past the OK pattern
        unit.model.board.drive(BUTTON, 1)
        await eventually(
            lambda: unit.broker.value(f"{PREFIX}/button_down") == b"True", "pressed"
        )
        await unit.settle()
        self.assertEqual(
            unit.model.board.levels[LED], 1, "the LED is on while the button is down"
        )
        unit.model.board.drive(BUTTON, 0)
        await eventually(
            lambda: unit.broker.value(f"{PREFIX}/button_down") == b"False", "released"
        )
        await unit.settle()
        self.assertEqual(unit.model.board.levels[LED], 0)

    async def test_the_will_marks_it_lost_and_a_clean_stop_disconnected(self) -> None:
        unit, job = await self.start()
        (connection,) = [
            c
            for c in unit.broker.connections
            if c.client_id == "appliance-pio1-monitor"
        ]
        connection.die()
        self.assertEqual(unit.broker.value(f"{PREFIX}/$state"), b"lost")
        # as the reconnected connection
        job.context.bus, job.context.close = unit.broker.connect(
            "appliance-pio1-monitor"
        )
        await job.stop()
        self.assertEqual(unit.broker.value(f"{PREFIX}/$state"), b"disconnected")
        self.assertEqual(unit.model.board.levels[LED], 0)


class MonitorOnMosquittoTests(ClusterTestCase):
    async def test_the_units_monitor_is_ready_then_disconnected(self) -> None:
        await self.start_cluster(["pio1"])
        seen: list[bytes] = []
        watcher = MqttClient(
            reactor, self.broker.host, self.broker.port, "monitor-watcher"
        )
        watcher.subscribe(
            "pioreactor/pio1/$experiment/monitor/$state",
            lambda m: seen.append(m.payload),
            qos=1,
        )
        watcher.startService()
        self.addCleanup(watcher.stopService)
        await eventually(lambda: seen[-1:] == [b"ready"], "pio1's monitor ready")
        await self.services["pio1"].stopService()
        await eventually(
            lambda: seen[-1:] == [b"disconnected"], "pio1's monitor disconnected"
        )
