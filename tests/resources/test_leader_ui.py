"""Chart and settings descriptors (shipped files, then the data directory's overlays) and the access point flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor

from pioreactor_appliance.config import Config
from pioreactor_appliance.descriptors import Descriptors
from pioreactor_appliance.hardware.unit import model_of
from pioreactor_appliance.jobs.bioreactor import Bioreactor
from pioreactor_appliance.jobs.unit_state import PersistentCache
from pioreactor_appliance.resources.leader_ui import LeaderUiApi

from ..helpers import LeaderApiTestCase, response_of


class LeaderUiTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.flag = self.data_dir / "local_access_point"
        config = Config.defaults()
        cache = PersistentCache(self.data_dir / "cache.json", reactor)
        self.addCleanup(cache.close)
        self.bioreactor = Bioreactor(cache, config, model_of(config), "leader")
        return [LeaderUiApi(Descriptors(self.data_dir), self.bioreactor, self.flag)]

    async def setUp(self) -> None:
        await self.start()

    def overlay(self, kind: str, name: str, text: str, plugin: bool = False) -> None:
        directory = self.data_dir / ("plugins/ui" if plugin else "ui") / kind
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)

    async def test_chart_descriptors_shipped_then_overlaid(self) -> None:
        shipped = await self.call("GET", "/api/charts/descriptors", expect=200)
        keys = [chart["chart_key"] for chart in shipped]
        self.assertIn("implied_growth_rate", keys)
        self.assertEqual(
            set(shipped[0]),
            {"chart_key", "data_source", "title", "source", "y_axis_label", "fixed_decimals", "down_sample", "mqtt_topic",
             "lookback", "data_source_column", "payload_key", "y_transformation", "y_axis_domain", "interpolation"},
        )
        chart = "chart_key: implied_growth_rate\ndata_source: growth_rates\ntitle: Mine\ny_axis_label: r\nmqtt_topic: x/y\n"
        self.overlay("charts", "mine.yaml", chart, plugin=True)
        self.overlay("charts", "broken.yaml", "chart_key: broken\ntitle: [no\n")
        self.overlay("charts", "wrong.yaml", "chart_key: wrong\ndata_source: t\ntitle: t\ny_axis_label: y\nmqtt_topic: 3\n")
        charts = await self.call("GET", "/api/charts/descriptors", expect=200)
        self.assertEqual([c["chart_key"] for c in charts], keys)  # the broken and wrong files are skipped
        mine = next(c for c in charts if c["chart_key"] == "implied_growth_rate")
        self.assertEqual((mine["title"], mine["mqtt_topic"]), ("Mine", "x/y"))

    async def test_settings_descriptors_carry_the_bioreactors_true_limits(self) -> None:
        collections = await self.call("GET", "/api/settings/descriptors", expect=200)
        bioreactor = next(c for c in collections if c["key"] == "bioreactor")
        volume = next(f for f in bioreactor["fields"] if f["key"] == "current_volume_ml")
        self.assertEqual(
            (volume["default"], volume["min"], volume["max"]),
            (self.bioreactor.default("current_volume_ml"), 0.0, self.bioreactor.model.reactor_capacity_ml),
        )
        fraction = next(f for f in bioreactor["fields"] if f["key"] == "alt_media_fraction")
        self.assertEqual(fraction["max"], 1.0)
        self.overlay("settings", "lab.yml", "key: lab\ndisplay_name: Lab\nfields:\n  - {key: room, label: Room, type: string}\n")
        self.overlay("settings", "bad.yml", "key: bad\ndisplay_name: Bad\nfields:\n  - {key: a, label: A, type: colour}\n")
        keys = [c["key"] for c in await self.call("GET", "/api/settings/descriptors", expect=200)]
        self.assertEqual(keys, ["bioreactor", "lab"])

    async def test_local_access_point(self) -> None:
        response = await response_of(self.stub, "GET", "/api/local_access_point")
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=10000"])
        self.assertEqual(await response.json(), {"active": False})
        self.flag.write_text("")
        self.assertEqual(await self.call("GET", "/api/local_access_point", expect=200), {"active": True})
        await self.error("POST", "/api/local_access_point", 405, "POST")
        await self.error("GET", "/api/charts/descriptors/x", 404)
