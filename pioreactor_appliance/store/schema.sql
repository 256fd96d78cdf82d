-- Schema version 1 of the leader's database.
-- Timestamps are ISO 8601 UTC text with milliseconds ("2026-01-05T12:00:00.123Z").
-- Rows that belong to an experiment go when the experiment goes (ON DELETE CASCADE);
-- the assignment history is kept on purpose and has no foreign keys.

CREATE TABLE experiments (
    experiment    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    media_used    TEXT,
    organism_used TEXT
);
CREATE UNIQUE INDEX experiments_by_creation ON experiments (created_at, experiment, description);

CREATE TABLE experiment_tags (
    experiment TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (experiment, tag)
);

CREATE TABLE workers (
    pioreactor_unit TEXT NOT NULL UNIQUE,
    added_at        TEXT NOT NULL,
    model_name      TEXT,
    model_version   TEXT,
    is_active       INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1))
);

CREATE TABLE experiment_worker_assignments (
    pioreactor_unit TEXT NOT NULL UNIQUE REFERENCES workers (pioreactor_unit) ON DELETE CASCADE,
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    assigned_at     TEXT NOT NULL
);
CREATE INDEX experiment_worker_assignments_by_experiment ON experiment_worker_assignments (experiment);

CREATE TABLE experiment_worker_assignments_history (
    pioreactor_unit TEXT NOT NULL,
    experiment      TEXT NOT NULL,
    assigned_at     TEXT NOT NULL,
    unassigned_at   TEXT,
    UNIQUE (pioreactor_unit, experiment, assigned_at)
);
CREATE INDEX experiment_worker_assignments_history_by_experiment
    ON experiment_worker_assignments_history (experiment, pioreactor_unit);

-- Every assignment opens a history row; every removal (explicit, REPLACE or cascade) closes it.
CREATE TRIGGER assignment_opened AFTER INSERT ON experiment_worker_assignments
BEGIN
    INSERT OR IGNORE INTO experiment_worker_assignments_history (pioreactor_unit, experiment, assigned_at, unassigned_at)
    VALUES (NEW.pioreactor_unit, NEW.experiment, NEW.assigned_at, NULL);
END;

CREATE TRIGGER assignment_closed AFTER DELETE ON experiment_worker_assignments
BEGIN
    UPDATE experiment_worker_assignments_history
    SET unassigned_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE pioreactor_unit = OLD.pioreactor_unit
      AND experiment = OLD.experiment
      AND assigned_at = OLD.assigned_at
      AND unassigned_at IS NULL;
END;

CREATE TABLE pioreactor_unit_labels (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    label           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (pioreactor_unit, experiment),
    UNIQUE (label, experiment)
);

CREATE TABLE logs (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    message         TEXT NOT NULL,
    source          TEXT NOT NULL,
    level           TEXT NOT NULL,
    task            TEXT
);
CREATE INDEX logs_by_experiment ON logs (experiment, timestamp DESC);
CREATE INDEX logs_by_experiment_level ON logs (experiment, level, timestamp DESC);
CREATE INDEX logs_by_unit ON logs (pioreactor_unit, timestamp DESC);
CREATE INDEX logs_by_level ON logs (level, timestamp DESC);

-- Time series.

CREATE TABLE od_readings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    od_reading      REAL NOT NULL,
    angle           INTEGER NOT NULL,
    channel         INTEGER NOT NULL CHECK (channel BETWEEN 1 AND 4)
);
CREATE INDEX od_readings_ix ON od_readings (experiment, pioreactor_unit, channel, timestamp);

CREATE TABLE raw_od_readings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    od_reading      REAL NOT NULL,
    channel         INTEGER NOT NULL CHECK (channel BETWEEN 1 AND 4)
);
CREATE INDEX raw_od_readings_ix ON raw_od_readings (experiment, pioreactor_unit, channel, timestamp);

CREATE TABLE od_readings_fused (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    od_reading      REAL NOT NULL
);
CREATE INDEX od_readings_fused_ix ON od_readings_fused (experiment, pioreactor_unit, timestamp);

CREATE TABLE od_readings_filtered (
    experiment            TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit       TEXT NOT NULL,
    timestamp             TEXT NOT NULL,
    normalized_od_reading REAL NOT NULL
);
CREATE INDEX od_readings_filtered_ix ON od_readings_filtered (experiment, pioreactor_unit, timestamp);

CREATE TABLE growth_rates (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    rate            REAL NOT NULL
);
CREATE INDEX growth_rates_ix ON growth_rates (experiment, pioreactor_unit, timestamp);

CREATE TABLE temperature_readings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    temperature_c   REAL NOT NULL
);
CREATE INDEX temperature_readings_ix ON temperature_readings (experiment, pioreactor_unit, timestamp);

CREATE TABLE stirring_rates (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    measured_rpm    REAL NOT NULL
);
CREATE INDEX stirring_rates_ix ON stirring_rates (experiment, pioreactor_unit);

CREATE TABLE alt_media_fractions (
    experiment         TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit    TEXT NOT NULL,
    timestamp          TEXT NOT NULL,
    alt_media_fraction REAL NOT NULL
);
CREATE INDEX alt_media_fractions_ix ON alt_media_fractions (experiment);

CREATE TABLE liquid_volumes (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    liquid_volume   REAL NOT NULL
);
CREATE INDEX liquid_volumes_ix ON liquid_volumes (experiment);

CREATE TABLE ir_led_intensities (
    experiment         TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit    TEXT NOT NULL,
    timestamp          TEXT NOT NULL,
    relative_intensity REAL NOT NULL
);
CREATE INDEX ir_led_intensities_ix ON ir_led_intensities (experiment, pioreactor_unit);

CREATE TABLE od_blanks (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('1', '2')),
    angle           INTEGER NOT NULL,
    od_reading      REAL NOT NULL
);
CREATE INDEX od_blanks_ix ON od_blanks (experiment, pioreactor_unit, timestamp);

CREATE TABLE pwm_dcs (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    channel_1       REAL,
    channel_2       REAL,
    channel_3       REAL,
    channel_4       REAL,
    channel_5       REAL
);
CREATE INDEX pwm_dcs_ix ON pwm_dcs (experiment, pioreactor_unit);

CREATE TABLE pioreactor_unit_activity_data (
    experiment                TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit           TEXT NOT NULL,
    timestamp                 TEXT NOT NULL,
    od_reading                REAL,
    od_fused                  REAL,
    normalized_od_reading     REAL,
    temperature_c             REAL,
    growth_rate               REAL,
    measured_rpm              REAL,
    led_a_intensity_update    REAL,
    led_b_intensity_update    REAL,
    led_c_intensity_update    REAL,
    led_d_intensity_update    REAL,
    add_media_ml              REAL,
    remove_waste_ml           REAL,
    add_alt_media_ml          REAL,
    UNIQUE (experiment, pioreactor_unit, timestamp)
);

-- Events.

CREATE TABLE dosing_events (
    experiment       TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit  TEXT NOT NULL,
    timestamp        TEXT NOT NULL,
    event            TEXT NOT NULL,
    volume_change_ml REAL NOT NULL,
    source_of_event  TEXT
);
CREATE INDEX dosing_events_ix ON dosing_events (experiment, pioreactor_unit);

CREATE TABLE led_change_events (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('A', 'B', 'C', 'D')),
    intensity       REAL NOT NULL,
    source_of_event TEXT
);
CREATE INDEX led_change_events_ix ON led_change_events (experiment, pioreactor_unit);

CREATE TABLE dosing_automation_events (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    event_name      TEXT NOT NULL,
    message         TEXT,
    data            TEXT
);
CREATE INDEX dosing_automation_events_ix ON dosing_automation_events (experiment, pioreactor_unit);

CREATE TABLE led_automation_events (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    event_name      TEXT NOT NULL,
    message         TEXT,
    data            TEXT
);
CREATE INDEX led_automation_events_ix ON led_automation_events (experiment, pioreactor_unit);

CREATE TABLE temperature_automation_events (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    event_name      TEXT NOT NULL,
    message         TEXT,
    data            TEXT
);
CREATE INDEX temperature_automation_events_ix ON temperature_automation_events (experiment, pioreactor_unit);

CREATE TABLE dosing_automation_settings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    automation_name TEXT NOT NULL,
    settings        BLOB NOT NULL
);
CREATE INDEX dosing_automation_settings_ix ON dosing_automation_settings (experiment, pioreactor_unit);

CREATE TABLE led_automation_settings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    automation_name TEXT NOT NULL,
    settings        BLOB NOT NULL
);
CREATE INDEX led_automation_settings_ix ON led_automation_settings (experiment, pioreactor_unit);

CREATE TABLE temperature_automation_settings (
    experiment      TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE,
    pioreactor_unit TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    automation_name TEXT NOT NULL,
    settings        BLOB NOT NULL
);
CREATE INDEX temperature_automation_settings_ix ON temperature_automation_settings (experiment, pioreactor_unit);

-- Cluster state outside experiments.

CREATE TABLE config_files_histories (
    timestamp TEXT NOT NULL,
    filename  TEXT NOT NULL,
    data      TEXT NOT NULL
);
CREATE INDEX config_files_histories_by_filename ON config_files_histories (filename);

CREATE TABLE experiment_profile_runs (
    started_at              TEXT NOT NULL,
    experiment_profile_name TEXT NOT NULL,
    experiment              TEXT NOT NULL REFERENCES experiments (experiment) ON DELETE CASCADE
);
CREATE INDEX experiment_profile_runs_ix ON experiment_profile_runs (experiment, started_at);

-- Copies of the units' calibrations, for export only (no foreign key: units keep their own).
CREATE TABLE calibrations (
    pioreactor_unit   TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    type              TEXT NOT NULL,
    data              TEXT NOT NULL,
    name              TEXT NOT NULL,
    is_current        INTEGER NOT NULL DEFAULT 0,
    set_to_current_at TEXT,
    UNIQUE (pioreactor_unit, type, name)
);

CREATE VIEW latest_experiment AS
    SELECT experiment, created_at, description
    FROM experiments
    ORDER BY rowid DESC
    LIMIT 1;
