-- Schema version 3: a generation per chartable table, bumped by any delete or update of its rows.
-- The leader keeps recent series in memory (store/series_cache.py) and reads only the rows inserted
-- since (rowid > last seen); a change of generation tells it that rows it holds were deleted or changed.
-- Row triggers: one small update per deleted row (an experiment's deletion cascades here).
CREATE TABLE time_series_changes (
    source     TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO time_series_changes (source) VALUES ('growth_rates'), ('temperature_readings'), ('od_readings_filtered'), ('od_readings_fused'), ('od_readings'), ('raw_od_readings');

CREATE TRIGGER growth_rates_deleted AFTER DELETE ON growth_rates BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'growth_rates'; END;
CREATE TRIGGER growth_rates_updated AFTER UPDATE ON growth_rates BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'growth_rates'; END;
CREATE TRIGGER temperature_readings_deleted AFTER DELETE ON temperature_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'temperature_readings'; END;
CREATE TRIGGER temperature_readings_updated AFTER UPDATE ON temperature_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'temperature_readings'; END;
CREATE TRIGGER od_readings_filtered_deleted AFTER DELETE ON od_readings_filtered BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings_filtered'; END;
CREATE TRIGGER od_readings_filtered_updated AFTER UPDATE ON od_readings_filtered BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings_filtered'; END;
CREATE TRIGGER od_readings_fused_deleted AFTER DELETE ON od_readings_fused BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings_fused'; END;
CREATE TRIGGER od_readings_fused_updated AFTER UPDATE ON od_readings_fused BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings_fused'; END;
CREATE TRIGGER od_readings_deleted AFTER DELETE ON od_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings'; END;
CREATE TRIGGER od_readings_updated AFTER UPDATE ON od_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'od_readings'; END;
CREATE TRIGGER raw_od_readings_deleted AFTER DELETE ON raw_od_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'raw_od_readings'; END;
CREATE TRIGGER raw_od_readings_updated AFTER UPDATE ON raw_od_readings BEGIN UPDATE time_series_changes SET generation = generation + 1 WHERE source = 'raw_od_readings'; END;
