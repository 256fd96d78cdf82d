from __future__ import annotations

from ..helpers import LeaderApiTestCase

MODEL_FIELDS = {
    "name", "version", "display_name", "reactor_capacity_ml", "reactor_diameter_mm", "reactor_max_fill_volume_ml",
    "max_temp_to_reduce_heating", "max_temp_to_disable_heating", "max_temp_to_shutdown", "is_legacy", "is_contrib",
}


class CatalogRoutesTests(LeaderApiTestCase):
    async def setUp(self) -> None:
        await self.start()

    async def test_models(self) -> None:
        models = (await self.call("GET", "/api/models", expect=200))["models"]
        self.assertEqual(len(models), 7)
        for model in models:
            self.assertEqual(set(model), MODEL_FIELDS)
            self.assertLess(model["max_temp_to_reduce_heating"], model["max_temp_to_disable_heating"])
            self.assertLess(model["max_temp_to_disable_heating"], model["max_temp_to_shutdown"])
            self.assertLessEqual(model["reactor_max_fill_volume_ml"], model["reactor_capacity_ml"])
        pairs = {(m["name"], m["version"]) for m in models}
        self.assertEqual(len(pairs), 7)
        self.assertIn(("pioreactor_20ml", "1.0"), pairs)
        self.assertIn(("pioreactor_40ml", "1.5"), pairs)

    async def test_historical_media_and_organisms(self) -> None:
        self.assertEqual(await self.call("GET", "/api/historical_media", expect=200), [])
        for name, media, organism in (("e1", "LB", "E. coli"), ("e2", "YPD", "S. cerevisiae"), ("e3", "LB", "")):
            self.clock.advance(60)
            await self.call("POST", "/api/experiments", expect=201, json={"experiment": name, "mediaUsed": media, "organismUsed": organism})
        await self.call("POST", "/api/experiments", expect=201, json={"experiment": "e4"})
        self.assertEqual(await self.call("GET", "/api/historical_media", expect=200), [{"media_used": "LB"}, {"media_used": "YPD"}])
        self.assertEqual(
            await self.call("GET", "/api/historical_organisms", expect=200),
            [{"organism_used": "S. cerevisiae"}, {"organism_used": "E. coli"}],
        )

    async def test_bad_input(self) -> None:
        await self.error("POST", "/api/models", 405, "POST")
        await self.error("GET", "/api/historical_media/LB", 404, "No route matches")
        await self.error("POST", "/api/experiments", 400, "expected a string, got int @ body.mediaUsed", json={"experiment": "e", "mediaUsed": 5})
