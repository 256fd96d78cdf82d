-- Schema version 4: pioreactor_unit_activity_data filled as the reference fills it, by triggers.
-- Every insert into a per-unit time series upserts its column of the unit's row for that timestamp;
-- LED and dosing columns keep a value already there. Rows stored before this step are not copied in
-- (a copy of a large database would hold the leader's start for minutes).

CREATE TRIGGER od_readings_activity AFTER INSERT ON od_readings BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, od_reading)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.od_reading)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET od_reading = excluded.od_reading;
END;

CREATE TRIGGER od_readings_fused_activity AFTER INSERT ON od_readings_fused BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, od_fused)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.od_reading)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET od_fused = excluded.od_fused;
END;

CREATE TRIGGER od_readings_filtered_activity AFTER INSERT ON od_readings_filtered BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, normalized_od_reading)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.normalized_od_reading)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET normalized_od_reading = excluded.normalized_od_reading;
END;

CREATE TRIGGER temperature_readings_activity AFTER INSERT ON temperature_readings BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, temperature_c)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.temperature_c)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET temperature_c = excluded.temperature_c;
END;

CREATE TRIGGER growth_rates_activity AFTER INSERT ON growth_rates BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, growth_rate)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.rate)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET growth_rate = excluded.growth_rate;
END;

CREATE TRIGGER stirring_rates_activity AFTER INSERT ON stirring_rates BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, measured_rpm)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.measured_rpm)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET measured_rpm = excluded.measured_rpm;
END;

CREATE TRIGGER led_change_events_a_activity AFTER INSERT ON led_change_events WHEN NEW.channel = 'A' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, led_a_intensity_update)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.intensity)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET led_a_intensity_update = coalesce(led_a_intensity_update, excluded.led_a_intensity_update);
END;

CREATE TRIGGER led_change_events_b_activity AFTER INSERT ON led_change_events WHEN NEW.channel = 'B' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, led_b_intensity_update)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.intensity)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET led_b_intensity_update = coalesce(led_b_intensity_update, excluded.led_b_intensity_update);
END;

CREATE TRIGGER led_change_events_c_activity AFTER INSERT ON led_change_events WHEN NEW.channel = 'C' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, led_c_intensity_update)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.intensity)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET led_c_intensity_update = coalesce(led_c_intensity_update, excluded.led_c_intensity_update);
END;

CREATE TRIGGER led_change_events_d_activity AFTER INSERT ON led_change_events WHEN NEW.channel = 'D' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, led_d_intensity_update)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.intensity)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET led_d_intensity_update = coalesce(led_d_intensity_update, excluded.led_d_intensity_update);
END;

CREATE TRIGGER dosing_events_add_media_activity AFTER INSERT ON dosing_events WHEN NEW.event = 'add_media' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, add_media_ml)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.volume_change_ml)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET add_media_ml = coalesce(add_media_ml, excluded.add_media_ml);
END;

CREATE TRIGGER dosing_events_remove_waste_activity AFTER INSERT ON dosing_events WHEN NEW.event = 'remove_waste' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, remove_waste_ml)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.volume_change_ml)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET remove_waste_ml = coalesce(remove_waste_ml, excluded.remove_waste_ml);
END;

CREATE TRIGGER dosing_events_add_alt_media_activity AFTER INSERT ON dosing_events WHEN NEW.event = 'add_alt_media' BEGIN
    INSERT INTO pioreactor_unit_activity_data (experiment, pioreactor_unit, timestamp, add_alt_media_ml)
    VALUES (NEW.experiment, NEW.pioreactor_unit, NEW.timestamp, NEW.volume_change_ml)
    ON CONFLICT (experiment, pioreactor_unit, timestamp) DO UPDATE SET add_alt_media_ml = coalesce(add_alt_media_ml, excluded.add_alt_media_ml);
END;
