"""Driving routes in memory against a real database thread."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pioreactor_appliance import tap
from pioreactor_appliance.fanout import UnitAddresses
from pioreactor_appliance.mdns import Discovery
from pioreactor_appliance.resources.catalog import CatalogApi
from pioreactor_appliance.resources.experiments import ExperimentsApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.resources.workers import WorkersApi
from pioreactor_appliance.store.database import Database
from pioreactor_appliance.tasks import TaskRegistry

from .fakes import FakeFanOut, FakeMqtt
from .mdns_responder import unused_udp_address


def build_unit(case: SynchronousTestCase, role: str) -> MultiService:
    """The service tree ``twistd pioreactor`` builds for unit pio1 in ``role``, on a memory reactor, not started."""
    data_dir = Path(case.mktemp())
    data_dir.mkdir()
    options = tap.Options()
    options.parseOptions(["--data-dir", str(data_dir), "--unit", "pio1", "--role", role, "--listen", "tcp:0", "--mqtt", "127.0.0.1:1"])
    return tap.makeService(options, reactor=MemoryReactorClock())


async def start_database(case: TestCase) -> Database:
    """A running database on a fresh file, stopped when the test ends."""
    db = Database(Path(case.mktemp()) / "pioreactor.sqlite", reactor)
    db.startService()
    case.addCleanup(db.stopService)
    assert db.opened is not None
    await db.opened
    return db


async def _settle(stub: StubTreq, pending: Deferred[Any], what: str) -> Any:
    """Wait for ``pending`` while flushing the in-memory connection, then return its result."""
    done: list[Failure | Any] = []

    def keep(result: Any) -> None:
        done.append(result)

    pending.addBoth(keep)
    for _ in range(2000):
        stub.flush()
        if done:
            break
        await deferLater(reactor, 0.002, lambda: None)
    else:
        raise AssertionError(f"{what} got no answer")
    if isinstance(done[0], Failure):
        done[0].raiseException()
    return done[0]


async def request(stub: StubTreq, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Send one request and wait for its JSON answer.

    A handler awaiting the database thread answers on a later reactor turn, and
    StubTreq only moves bytes when flushed, so keep flushing until it arrives.
    """
    what = f"{method} {path}"
    response = await _settle(stub, stub.request(method, "http://leader" + path, **kwargs), what)
    body = await _settle(stub, response.content(), what)
    return response.code, jsonlib.loads(body) if body else None


async def response_of(stub: StubTreq, method: str, path: str, **kwargs: Any) -> Any:
    """The response itself, for tests that check headers."""
    return await _settle(stub, stub.request(method, "http://leader" + path, **kwargs), f"{method} {path}")


class LeaderApiTestCase(TestCase):
    """A leader's ``/api`` families in memory, on a real database, with recording fakes around them."""

    NOW = 1767614400.123  # 2026-01-05T12:00:00.123Z
    NOW_ISO = "2026-01-05T12:00:00.123Z"

    async def start(self) -> None:
        self.clock = Clock()
        self.clock.advance(self.NOW)
        self.db = await start_database(self)
        self.tasks = TaskRegistry(self.clock, "leader", max_count=10, max_age=60)
        self.fanout = FakeFanOut()
        self.mqtt = FakeMqtt()
        # A real browse over loopback, to a port that never answers unless a test points it at a fake responder.
        self.discovery = Discovery(reactor, reactor, unused_udp_address(self), 0.05)
        families = [
            ExperimentsApi(self.db, self.clock, self.tasks, self.fanout, "leader"),
            WorkersApi(self.db, self.clock, self.tasks, self.fanout, self.mqtt, "leader", self.discovery, addresses=UnitAddresses({"pio1": "10.0.0.21", "pio2": "pio2.lan"}, 80)),
            CatalogApi(self.db),
            *self.more_families(),
        ]
        self.router = Router(families)
        self.stub = StubTreq(self.router)

    def more_families(self) -> list[Any]:
        """Families a test case adds to the leader's; they may use the fakes, the clock and the database."""
        return []

    async def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        code, body = await request(self.stub, method, path, **kwargs)
        if expect is not None:
            self.assertEqual(code, expect, body)
        return body

    async def call_raw(self, method: str, path: str, data: bytes, content_type: bytes = b"application/json") -> tuple[int, Any]:
        return await request(self.stub, method, path, data=data, headers={b"content-type": [content_type]})

    async def error(self, method: str, path: str, status: int, *mentions: str, **kwargs: Any) -> dict[str, Any]:
        """Expect a JSON error with ``status`` whose error or cause mentions each of ``mentions``."""
        body = await self.call(method, path, expect=status, **kwargs)
        text = f"{body['error']} {body['cause']}"
        for mention in mentions:
            self.assertIn(mention, text)
        self.assertEqual(body["error_info"]["status"], status)
        return body

    async def finish_task(self, accepted: dict[str, Any]) -> dict[str, Any]:
        """Run the task an A202 names to its end; its ``task_results`` body."""
        self.assertEqual(set(accepted), {"unit", "task_id", "result_url_path", "status"})
        task = self.tasks.get(accepted["task_id"])
        self.clock.advance(0)
        assert task.deferred is not None
        await task.deferred
        return task.body()
