"""Each unit's plugins through the leader: the cached list, installs checked here, the kill switch, the cache forgotten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pioreactor_appliance.resources.leader_cache import LeaderCache
from pioreactor_appliance.resources.unit_plugins import UnitPluginsApi

from ..helpers import LeaderApiTestCase
from .test_worker_calibrations import AnsweringFanOut

PLUGIN = {"name": "pioreactor-air-bubbler", "version": "0.4.0", "description": "", "homepage": "", "source": "pip", "author": ""}
INSTALL = {"args": ["pioreactor-air-bubbler"], "options": {"version": "0.4.0"}, "env": {}}


class UnitPluginsTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.units = AnsweringFanOut(answers={"/unit_api/plugins/installed": [PLUGIN]})
        self.cache = LeaderCache(self.clock, 10.0)
        return [UnitPluginsApi(self.db, self.tasks, self.units, self.cache, self.data_dir, "leader", pip_timeout=120.0)]

    async def setUp(self) -> None:
        await self.start()
        for unit in ("pio1", "pio2"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
        await self.call("PUT", "/api/workers/pio2/is_active", expect=200, json={"is_active": 0})

    async def result(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self.finish_task(await self.call(method, path, expect=202, **kwargs))
        self.assertEqual(body["status"], "succeeded", body)
        return body["result"]

    async def test_the_list_covers_the_cluster_and_is_reused(self) -> None:
        result = await self.result("GET", "/api/units/$broadcast/plugins/installed")
        self.assertEqual(list(result), ["leader", "pio1", "pio2"])
        self.assertEqual(result["leader"], {"ok": True, "unit": "leader", "value": [PLUGIN]})
        self.assertEqual(await self.result("GET", "/api/units/leader/plugins/installed"), {"leader": result["leader"]})
        self.assertEqual(self.units.calls, [("GET", ["leader", "pio1", "pio2"], "/unit_api/plugins/installed", None)])
        self.clock.advance(10)
        await self.result("GET", "/api/units/pio1/plugins/installed")
        self.assertEqual(len(self.units.calls), 2)

    async def test_install_and_uninstall_fan_out_and_forget_plugins_and_protocols(self) -> None:
        for action in ("install", "uninstall"):
            for method in ("POST", "PATCH"):
                for target, asked in (("pio1", ["pio1"]), ("$broadcast", ["leader", "pio1", "pio2"])):
                    await self.result("GET", "/api/units/$broadcast/plugins/installed")
                    await self.cache.read("calibration_protocols", ["pio1"], lambda units: self.units.request("GET", units, "/p"))
                    self.units.calls.clear()
                    body = INSTALL if action == "install" else {"args": ["pioreactor-air-bubbler"]}
                    result = await self.result(method, f"/api/units/{target}/plugins/{action}", json=body)
                    self.assertEqual(list(result), asked)
                    sent = {"args": ["pioreactor-air-bubbler"], "options": body.get("options", {}), "env": {}}
                    self.assertEqual(self.units.calls, [("POST", asked, f"/unit_api/plugins/{action}", sent)])
                    self.assertEqual(self.units.timeouts[-1], 130.0)
                    for unit in asked:
                        self.assertIsNone(self.cache.get(unit, "plugins"))
                    self.assertIsNone(self.cache.get("pio1", "calibration_protocols"))
                    if target == "pio1":
                        self.assertIsNotNone(self.cache.get("leader", "plugins"))

    async def test_bad_requests_reach_no_unit(self) -> None:
        for body, mention in (
            ({"args": []}, "Plugin name is required"),
            ({"args": ["a", "b"]}, "one plugin at a time"),
            ({"args": ["bad name;rm"]}, "Invalid plugin name"),
            ({"args": ["-e"]}, "Invalid plugin name"),
            ({"args": "pioreactor-x"}, "Invalid request body"),
        ):
            await self.error("POST", "/api/units/pio1/plugins/install", 400, mention, json=body)
            await self.error("PATCH", "/api/units/pio1/plugins/uninstall", 400, mention, json=body)
        code, _ = await self.call_raw("POST", "/api/units/pio1/plugins/install", b"")
        self.assertEqual(code, 400)
        await self.error("POST", "/api/units/nope/plugins/install", 400, "Unknown Pioreactor unit: nope", json=INSTALL)
        await self.error("GET", "/api/units/127.0.0.1/plugins/installed", 400, "Unknown Pioreactor unit")
        self.assertEqual(self.units.calls, [])

    async def test_the_kill_switch_on_the_leader_refuses_every_change(self) -> None:
        (self.data_dir / "DISALLOW_UI_INSTALLS").write_text("")
        await self.result("GET", "/api/units/pio1/plugins/installed")
        for action in ("install", "uninstall"):
            for target in ("pio1", "$broadcast"):
                await self.error("POST", f"/api/units/{target}/plugins/{action}", 403, "DISALLOW_UI_INSTALLS", json=INSTALL)
        self.assertEqual([path for _, _, path, _ in self.units.calls], ["/unit_api/plugins/installed"])
        self.assertIsNotNone(self.cache.get("pio1", "plugins"))  # a refused change forgets nothing
