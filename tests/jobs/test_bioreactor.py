"""The liquid bookkeeping: defaults from the config, checked edits applied whole, published retained."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.unit import model_of
from pioreactor_appliance.jobs.bioreactor import BadValue, Bioreactor
from pioreactor_appliance.jobs.unit_state import PersistentCache

from .broker import FakeBroker


class BioreactorTests(TestCase):
    def make(
        self, config: Config | None = None
    ) -> tuple[Bioreactor, PersistentCache, Path]:
        path = Path(self.mktemp()) / "cache.json"
        cache = PersistentCache(path, reactor)
        self.addCleanup(cache.close)
        config = config or Config.defaults()
        return Bioreactor(cache, config, model_of(config), "pio1"), cache, path

    def test_defaults_come_from_the_config(self) -> None:
        config = Config.defaults().with_overrides(
            [("bioreactor", "initial_volume_ml", "20")]
        )
        bioreactor, _, _ = self.make(config)
        values = bioreactor.values("exp1")
        self.assertEqual(values["current_volume_ml"], 20.0)
        self.assertEqual(values["efflux_tube_volume_ml"], 14.0)
        self.assertEqual(values["cumulative_waste_removed_ml"], 0.0)

    async def test_an_edit_is_checked_whole_stored_and_published(self) -> None:
        bioreactor, cache, path = self.make()
        broker = FakeBroker()
        for bad, reason in [
            ({"current_volume_ml": 12, "alt_media_fraction": 2}, "must be <= 1"),
            ({"current_volume_ml": 41}, "must be <= 40"),
            ({"volume": 3}, "unknown bioreactor variable"),
            ({"current_volume_ml": "12"}, "must be a number"),
            ({"current_volume_ml": float("nan")}, "must be >= 0"),
        ]:
            with self.assertRaisesRegex(BadValue, reason):
                bioreactor.update("exp1", bad, broker.client())
        self.assertEqual(
            bioreactor.values("exp1")["current_volume_ml"],
            14.0,
            "nothing of a refused edit applies",
        )
        await bioreactor.update("exp1", {"current_volume_ml": 11.5}, broker.client())
        self.assertEqual(
            broker.value("pioreactor/pio1/exp1/bioreactor/current_volume_ml"), b"11.5"
        )
        self.assertEqual(bioreactor.values("exp1")["current_volume_ml"], 11.5)
        self.assertEqual(bioreactor.values("exp2")["current_volume_ml"], 14.0)
        await cache.close()
        reread = PersistentCache(path, reactor)
        self.assertEqual(reread.get("bioreactor", "exp1")["current_volume_ml"], 11.5)
