"""A unit on a simulated Pioreactor whose time is a ``Clock``: for testing jobs against real physics fast.

The simulator's model and the jobs share one ``Clock``; pigpio's own client
talks to the simulated pigpiod over a real loopback socket, on its hardware
thread. ``advance`` moves the clock in steps and, after each, waits for the
hardware calls the step set off (and the edge reports they caused) to land.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pigpio
from attrs import define
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.connection import PigpioConnection
from pioreactor_appliance.hardware.sim.model import PioreactorModel, build_pioreactor
from pioreactor_appliance.hardware.sim.server import PigpioFactory
from pioreactor_appliance.hardware.unit import Hardware, HardwareSettings
from pioreactor_appliance.jobs.manager import JobManager
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.unit_state import PersistentCache, UnitState

from .broker import FakeBroker

START = 1_700_000_000.0  # a plausible epoch, so timestamps look like real ones


@define
class EdgeCounter:
    """Counts the hall sensor's falling edges: those the simulated board made, and those that reached the unit."""

    gpio: int
    made: int = 0
    arrived: int = 0

    def level_changed(self, tick: int, levels: int, changed: int) -> None:
        if changed & (1 << self.gpio) and not levels & (1 << self.gpio):
            self.made += 1

    def watchdog_expired(self, tick: int, gpio: int) -> None:
        pass

    def edge(self, gpio: int, level: int, tick: int) -> None:
        self.arrived += 1


@define
class SimulatedUnit:
    clock: Clock
    model: PioreactorModel
    connection: PigpioConnection
    hardware: Hardware
    manager: JobManager
    broker: FakeBroker
    data_dir: Path
    edges: EdgeCounter

    async def settle(self, edges: bool = False) -> None:
        """Let in-flight hardware calls finish; with ``edges``, also wait until every hall edge the
        simulated board made has reached the unit (the tachometer is called before our counter)."""
        for _ in range(3):
            await self.connection.call(lambda pi: None)
            await deferLater(reactor, 0)
        if edges:
            for _ in range(1000):
                if self.edges.arrived >= self.edges.made:
                    break
                await deferLater(reactor, 0.002)
            else:
                raise AssertionError(
                    f"only {self.edges.arrived} of {self.edges.made} hall edges arrived"
                )

    async def advance(
        self, seconds: float, step: float = 1.0, edges: bool = False
    ) -> None:
        """Move simulated time on by ``seconds``, ``step`` at a time, settling after each step."""
        steps = max(1, round(seconds / step))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
            await self.settle(edges)


async def simulated_unit(
    case: TestCase,
    registry: Registry,
    *,
    seed: int = 1,
    config: Config | None = None,
    broker: FakeBroker | None = None,
) -> SimulatedUnit:
    """A running manager for ``registry``'s jobs on a fresh simulated Pioreactor; all stopped when the test ends."""
    clock = Clock()
    clock.advance(START)
    config = config or Config.defaults()
    daemon, model = build_pioreactor(clock, seed=seed)
    model.start()
    case.addCleanup(model.stop)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        PigpioFactory(daemon)
    )
    case.addCleanup(port.stopListening)
    connection = PigpioConnection(reactor, "127.0.0.1", port.getHost().port)
    hardware = Hardware.build(connection, HardwareSettings.from_config(config), clock)
    edges = EdgeCounter(model.pins.hall)
    daemon.board.observers.append(edges)
    connection.watch(
        model.pins.hall, pigpio.FALLING_EDGE, edges.edge
    )  # after the tachometer's watch
    connection.startService()
    case.addCleanup(connection.stopService)
    for _ in range(500):
        if connection.connected:
            break
        await deferLater(reactor, 0.01)
    else:
        case.fail("never connected to the simulated pigpiod")
    data_dir = Path(case.mktemp())
    data_dir.mkdir()
    broker = broker or FakeBroker()
    state = UnitState(
        PersistentCache(data_dir / "storage" / "local_cache.json", reactor)
    )
    manager = JobManager(
        registry,
        clock,
        "pio1",
        "leader",
        config,
        hardware,
        state,
        data_dir,
        broker.connect,
    )
    manager.startService()

    async def stop() -> Any:
        await manager.stopService()
        await state.cache.close()

    case.addCleanup(stop)
    return SimulatedUnit(
        clock, model, connection, hardware, manager, broker, data_dir, edges
    )
