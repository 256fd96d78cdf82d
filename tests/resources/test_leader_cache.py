"""The leader cache on a task.Clock: what it keeps, for how long, and what a write makes it forget."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.resources.leader_cache import LeaderCache


def ok(unit: str, value: Any) -> dict[str, Any]:
    return {"ok": True, "unit": unit, "value": value}


def down(unit: str) -> dict[str, Any]:
    return {"ok": False, "unit": unit, "error": {"kind": "connection_error", "message": "off"}, "status_code": None, "retryable": True}


class LeaderCacheTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = LeaderCache(self.clock, 10.0)
        self.asked: list[list[str]] = []
        self.down: set[str] = set()
        self.answer = 1

    def fetch(self, units: list[str]) -> Deferred[dict[str, dict[str, Any]]]:
        self.asked.append(list(units))
        return succeed({u: down(u) if u in self.down else ok(u, self.answer) for u in units})

    async def read(self, *units: str, kind: str = "calibrations") -> dict[str, dict[str, Any]]:
        return await self.cache.read(kind, list(units), self.fetch)

    async def test_a_success_is_reused_until_it_expires(self) -> None:
        self.assertEqual(await self.read("pio2", "pio1"), {"pio1": ok("pio1", 1), "pio2": ok("pio2", 1)})
        self.answer = 2
        self.clock.advance(9.9)
        result = await self.read("pio1", "pio2")
        self.assertEqual(list(result), ["pio1", "pio2"])
        self.assertEqual(result["pio1"]["value"], 1)
        self.assertEqual(self.asked, [["pio2", "pio1"]])
        self.clock.advance(0.1)
        self.assertEqual((await self.read("pio1"))["pio1"]["value"], 2)
        self.assertEqual(self.asked[-1], ["pio1"])

    async def test_only_missing_units_are_asked_and_kinds_are_apart(self) -> None:
        await self.read("pio1")
        await self.read("pio1", "pio2")
        await self.read("pio1", kind="estimators")
        self.assertEqual(self.asked, [["pio1"], ["pio2"], ["pio1"]])

    async def test_failures_are_never_kept(self) -> None:
        self.down.add("pio2")
        self.assertFalse((await self.read("pio1", "pio2"))["pio2"]["ok"])
        self.down.clear()
        self.assertTrue((await self.read("pio1", "pio2"))["pio2"]["ok"])
        self.assertEqual(self.asked, [["pio1", "pio2"], ["pio2"]])

    async def test_invalidate_forgets_the_units_kinds_only(self) -> None:
        await self.read("pio1", "pio2")
        await self.read("pio1", kind="plugins")
        self.cache.invalidate(["pio1"], ["calibrations", "active_calibrations"])
        await self.read("pio1", "pio2")
        await self.read("pio1", kind="plugins")
        self.assertEqual(self.asked, [["pio1", "pio2"], ["pio1"], ["pio1"]])

    async def test_a_read_under_way_when_a_write_invalidates_keeps_nothing(self) -> None:
        pending: Deferred[dict[str, dict[str, Any]]] = Deferred()
        reading = Deferred.fromCoroutine(self.cache.read("calibrations", ["pio1"], lambda units: pending))
        self.cache.invalidate(["pio1"], ["calibrations"])
        pending.callback({"pio1": ok("pio1", "old")})
        self.assertEqual((await reading)["pio1"]["value"], "old")  # answered, but not kept
        self.assertIsNone(self.cache.get("pio1", "calibrations"))
        self.assertEqual((await self.read("pio1"))["pio1"]["value"], 1)
        self.assertEqual(self.cache.get("pio1", "calibrations"), ok("pio1", 1))

    async def test_expired_entries_do_not_stay_in_memory(self) -> None:
        await self.read("gone")
        self.clock.advance(11)
        await self.read("pio1")
        self.assertEqual(list(self.cache._entries), [("pio1", "calibrations")])
