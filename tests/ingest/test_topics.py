"""Each stored topic, with payloads shaped as our jobs publish them, becomes the right row; bad ones say why."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.ingest.topics import (
    COLUMNS,
    TOPIC_FILTERS,
    Malformed,
    NoTimezone,
    Row,
    row_of,
)

NOW = "2026-01-05T12:00:09.000Z"
T = "2026-01-05T12:00:00.123Z"


def j(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def od(channel: str, **changes: object) -> bytes:
    """As od_reading's _publish_snapshot sends od<N>."""
    payload = {"calibrated": 0, "timestamp": T, "angle": "90", "od": 0.0123, "channel": channel, "ir_led_intensity": 80.0}
    return j({**payload, **changes})


class RowsTests(SynchronousTestCase):
    def row(self, rest: str, payload: bytes) -> Row | None:
        return row_of(f"pioreactor/pio1/exp1/{rest}", payload, NOW)

    def test_od_readings_per_channel(self) -> None:
        for channel in "1234":
            self.assertEqual(self.row(f"od_reading/od{channel}", od(channel)), Row("od_readings", ("exp1", "pio1", T, 0.0123, 90, int(channel))))

    def test_raw_fused_and_ir_intensity(self) -> None:
        self.assertEqual(self.row("od_reading/raw_od2", od("2")), Row("raw_od_readings", ("exp1", "pio1", T, 0.0123, 2)))
        self.assertEqual(
            self.row("od_reading/od_fused", j({"od_fused": 0.5, "timestamp": T})), Row("od_readings_fused", ("exp1", "pio1", T, 0.5))
        )
        self.assertEqual(
            self.row("od_reading/relative_intensity_of_ir_led", j({"relative_intensity_of_ir_led": 0.98, "timestamp": T})),
            Row("ir_led_intensities", ("exp1", "pio1", T, 0.98)),
        )

    def test_growth_rate_and_filtered_od(self) -> None:
        self.assertEqual(
            self.row("growth_rate_calculating/growth_rate", j({"growth_rate": 0.25, "timestamp": T})),
            Row("growth_rates", ("exp1", "pio1", T, 0.25)),
        )
        self.assertEqual(
            self.row("growth_rate_calculating/od_filtered", j({"od_filtered": 1.01, "timestamp": T})),
            Row("od_readings_filtered", ("exp1", "pio1", T, 1.01)),
        )

    def test_temperature_and_rpm(self) -> None:
        self.assertEqual(
            self.row("temperature_automation/temperature", j({"timestamp": T, "temperature": 31.5})),
            Row("temperature_readings", ("exp1", "pio1", T, 31.5)),
        )
        self.assertEqual(
            self.row("stirring/measured_rpm", j({"measured_rpm": 498.2, "timestamp": T})), Row("stirring_rates", ("exp1", "pio1", T, 498.2))
        )

    def test_dosing_and_led_events(self) -> None:
        dose = j({"volume_change": 0.5, "event": "add_media", "source_of_event": "chemostat", "timestamp": T})
        self.assertEqual(self.row("dosing_events", dose), Row("dosing_events", ("exp1", "pio1", T, "add_media", 0.5, "chemostat")))
        led = j({"channel": "C", "intensity": 5.0, "source_of_event": "user", "timestamp": T})
        self.assertEqual(self.row("led_change_events", led), Row("led_change_events", ("exp1", "pio1", T, "C", 5.0, "user")))

    def test_bioreactor_values_are_timed_on_receipt(self) -> None:
        self.assertEqual(self.row("bioreactor/current_volume_ml", b"14.5"), Row("liquid_volumes", ("exp1", "pio1", NOW, 14.5)))
        self.assertEqual(self.row("bioreactor/alt_media_fraction", b"0.1"), Row("alt_media_fractions", ("exp1", "pio1", NOW, 0.1)))

    def test_pwm_duty_cycles_map_gpios_back_to_channels(self) -> None:
        self.assertEqual(self.row("pwms/dc", j({"17": 30.0, "18": 5})), Row("pwm_dcs", ("exp1", "pio1", NOW, 30.0, 0.0, 0.0, 0.0, 5.0)))

    def test_automation_events_and_settings(self) -> None:
        event = j({"event_name": "DilutionEvent", "message": "exchanged", "data": {"exchange_volume_ml": 0.5}})
        self.assertEqual(
            self.row("dosing_automation/latest_event", event),
            Row("dosing_automation_events", ("exp1", "pio1", NOW, "DilutionEvent", "exchanged", '{"exchange_volume_ml":0.5}')),
        )
        self.assertEqual(
            self.row("led_automation/latest_event", j({"event_name": "NoEvent", "message": "", "data": None})),
            Row("led_automation_events", ("exp1", "pio1", NOW, "NoEvent", "", "")),
        )
        settings = base64.b64encode(b'{"target_temperature": 30}').decode()
        record = {"pioreactor_unit": "pio1", "experiment": "exp1", "started_at": T, "ended_at": None,
                  "automation_name": "thermostat", "settings": settings}  # fmt: skip
        self.assertEqual(
            self.row("temperature_automation/temperature_automation_settings", j(record)),
            Row("temperature_automation_settings", ("exp1", "pio1", T, None, "thermostat", settings)),
        )

    def test_logs_upper_case_level_and_system_logs(self) -> None:
        line = j({"message": "Started", "level": "notice", "task": "stirring", "timestamp": T, "source": "app"})
        self.assertEqual(self.row("logs/app/notice", line), Row("logs", ("exp1", "pio1", T, "Started", "app", "NOTICE", "stirring")))
        system = row_of("pioreactor/leader/$experiment/logs/app/info", line, NOW)
        self.assertEqual(system, Row("logs", ("$experiment", "leader", T, "Started", "app", "NOTICE", "stirring")))

    def test_timestamps_are_stored_in_one_form(self) -> None:
        row = self.row("growth_rate_calculating/growth_rate", j({"growth_rate": 0.1, "timestamp": "2026-01-05T13:00:00.123456+01:00"}))
        assert row is not None
        self.assertEqual(row.values[2], T)

    def test_not_stored(self) -> None:
        self.assertIsNone(self.row("stirring/measured_rpm", b""))  # a setting cleared at the job's stop
        self.assertIsNone(row_of("pioreactor/pio1/_testing_exp/stirring/measured_rpm", j({"measured_rpm": 1.0, "timestamp": T}), NOW))

    def test_log_without_timezone(self) -> None:
        line = j({"message": "m", "level": "INFO", "task": "t", "timestamp": "2026-01-05T12:00:00", "source": "app"})
        self.assertRaises(NoTimezone, self.row, "logs/app/info", line)

    def test_malformed(self) -> None:
        cases = [
            ("od_reading/od1", b"{not json"),
            ("od_reading/od1", b"[1, 2]"),
            ("od_reading/od1", j({"timestamp": T, "angle": "90", "channel": "1"})),  # no od
            ("od_reading/od1", od("1", od="0.1")),
            ("od_reading/od1", od("1", od=True)),
            ("od_reading/od1", od("5")),
            ("od_reading/od1", od("1", angle="ninety")),
            ("od_reading/od1", od("1", angle="9" * 30)),  # would not fit an SQLite integer
            ("od_reading/od1", od("1", timestamp="yesterday")),
            ("od_reading/od1", od("1", timestamp=12)),
            ("od_reading/od1", b'{"od": NaN, "timestamp": "2026-01-05T12:00:00Z", "angle": "90", "channel": "1"}'),
            ("led_change_events", j({"channel": "E", "intensity": 5.0, "timestamp": T})),
            ("pwms/dc", j({"4": 10.0})),
            ("bioreactor/current_volume_ml", b"lots"),
            ("bioreactor/current_volume_ml", b"inf"),
            ("dosing_automation/latest_event", j({"message": "no name"})),
            ("logs/app/info", j({"level": "INFO", "timestamp": T})),
            ("stirring/target_rpm", b"500"),  # a topic the leader does not store
        ]
        for rest, payload in cases:
            with self.subTest(rest=rest, payload=payload):
                self.assertRaises(Malformed, self.row, rest, payload)
        self.assertRaises(Malformed, row_of, "pioreactor/pio1", b"1", NOW)
        self.assertRaises(Malformed, row_of, "other/pio1/exp1/stirring/measured_rpm", b"1", NOW)

    def test_every_filter_names_a_table_with_columns(self) -> None:
        self.assertIn("pioreactor/+/+/logs/#", TOPIC_FILTERS)
        self.assertIn("pioreactor/+/+/od_reading/od4", TOPIC_FILTERS)
        self.assertEqual(len(COLUMNS), 20)
