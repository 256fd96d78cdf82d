"""The log routes: pages, thresholds, the special rows, assignment windows, and posting over MQTT."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pioreactor_appliance.mqtt import MqttClient
from pioreactor_appliance.resources.logs import LogsApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.timestamps import iso_utc

from ..helpers import LeaderApiTestCase, request, start_database
from ..mosquitto import start_mosquitto
from ..test_mqtt import Inbox, settle

LEVELS = ("DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL")
PUBLISHED = json.dumps(
    {"message": "hello", "task": "", "source": "app", "level": "WARNING", "timestamp": "2026-01-05T12:00:00.000Z"}
).encode()
POST = {"message": "  hello  ", "source": "app", "level": "Warning", "timestamp": "2026-01-05T12:00:00.000Z", "task": None}


def _log(conn: sqlite3.Connection, experiment: str, unit: str, timestamp: str, level: str = "INFO", message: str = "m") -> None:
    conn.execute("INSERT INTO logs VALUES (?, ?, ?, ?, 'app', ?, 'stirring')", (experiment, unit, timestamp, message, level))


def _setup(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("PRAGMA foreign_keys = OFF")  # not in a transaction here: $experiment rows have no experiment
    for name, created in (("exp", iso_utc(now - 3600)), ("old", "2025-01-01T00:00:00.000Z")):
        conn.execute("INSERT INTO experiments (experiment, created_at) VALUES (?, ?)", (name, created))


class LogRouteTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        return [LogsApi(self.db, self.mqtt, self.clock)]

    async def setUp(self) -> None:
        await self.start()
        await self.db.run(_setup, self.NOW)

    async def rows(self, *rows: tuple[Any, ...]) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            for row in rows:
                _log(conn, *row)

        await self.db.run_without_foreign_keys(insert)

    async def test_pages_of_100_newest_first_and_skip(self) -> None:
        await self.rows(*[("exp", "pio01", iso_utc(self.NOW - i), "INFO", f"m{i}") for i in range(250)])
        first = await self.call("GET", "/api/logs", expect=200)
        self.assertEqual(len(first), 100)
        self.assertEqual([r["message"] for r in first[:2]], ["m0", "m1"])
        self.assertEqual(set(first[0]), {"timestamp", "level", "pioreactor_unit", "message", "task", "experiment"})
        third = await self.call("GET", "/api/experiments/exp/logs?skip=200", expect=200)
        self.assertEqual([r["message"] for r in third], [f"m{i}" for i in range(200, 250)])
        self.assertEqual(await self.call("GET", "/api/logs?skip=1000", expect=200), [])

    async def test_min_level_is_a_threshold_and_critical_never_shows(self) -> None:
        await self.rows(*[("exp", "pio01", iso_utc(self.NOW - i), level) for i, level in enumerate(LEVELS)])
        expected = {
            "debug": {"DEBUG", "INFO", "NOTICE", "WARNING", "ERROR"},
            "INFO": {"INFO", "NOTICE", "WARNING", "ERROR"},
            "": {"INFO", "NOTICE", "WARNING", "ERROR"},
            "nonsense": {"INFO", "NOTICE", "WARNING", "ERROR"},
            "Notice": {"NOTICE", "WARNING", "ERROR"},
            "WARNING": {"WARNING", "ERROR"},
            "error": {"ERROR"},
        }
        for threshold, levels in expected.items():
            rows = await self.call("GET", f"/api/experiments/exp/logs?min_level={threshold}", expect=200)
            self.assertEqual({r["level"] for r in rows}, levels, threshold)
        self.assertEqual({r["level"] for r in await self.call("GET", "/api/logs")}, expected["INFO"])

    async def test_unit_and_system_logs_take_broadcast_rows(self) -> None:
        t = iso_utc(self.NOW - 10)
        await self.rows(
            ("exp", "pio01", t, "INFO", "mine"),
            ("exp", "pio02", t, "INFO", "theirs"),
            ("exp", "$broadcast", t, "INFO", "everyone"),
            ("$experiment", "pio01", t, "INFO", "system mine"),
            ("$experiment", "$broadcast", t, "INFO", "system everyone"),
            ("$experiment", "pio02", t, "INFO", "system theirs"),
        )
        unit = await self.call("GET", "/api/units/pio01/logs", expect=200)
        self.assertEqual({r["message"] for r in unit}, {"mine", "everyone", "system mine", "system everyone"})
        system = await self.call("GET", "/api/units/pio01/system_logs", expect=200)
        self.assertEqual({r["message"] for r in system}, {"system mine", "system everyone"})
        experiment = await self.call("GET", "/api/experiments/exp/logs", expect=200)
        self.assertEqual({r["message"] for r in experiment}, {"mine", "theirs", "everyone"})

    async def test_recent_logs_start_a_day_ago_or_at_creation(self) -> None:
        await self.rows(
            ("exp", "pio01", iso_utc(self.NOW - 1800), "INFO", "after creation"),
            ("exp", "pio01", iso_utc(self.NOW - 5400), "INFO", "before creation"),
            ("old", "pio01", iso_utc(self.NOW - 3600 * 23), "INFO", "old recent"),
            ("old", "pio01", iso_utc(self.NOW - 3600 * 25), "INFO", "old stale"),
            ("$experiment", "pio01", iso_utc(self.NOW - 60), "INFO", "system"),
            ("$experiment", "pio02", iso_utc(self.NOW - 60), "INFO", "other unit"),
            *[("exp", "$broadcast", iso_utc(self.NOW - 100 - i), "INFO", f"b{i}") for i in range(60)],
        )
        exp = await self.call("GET", "/api/experiments/exp/recent_logs", expect=200)
        self.assertEqual(len(exp), 50)
        self.assertNotIn("system", {r["message"] for r in exp})
        old = await self.call("GET", "/api/experiments/old/recent_logs", expect=200)
        self.assertEqual([r["message"] for r in old], ["old recent"])
        worker = await self.call("GET", "/api/workers/pio01/experiments/old/recent_logs?min_level=debug", expect=200)
        self.assertEqual([r["message"] for r in worker], ["system", "old recent"])

    async def test_worker_logs_are_clipped_to_assignment_periods(self) -> None:
        def history(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO experiment_worker_assignments_history VALUES ('pio01', 'exp', ?, ?)",
                (iso_utc(self.NOW - 1000), iso_utc(self.NOW - 800)),
            )
            conn.execute("INSERT INTO experiment_worker_assignments_history VALUES ('pio01', 'exp', ?, NULL)", (iso_utc(self.NOW - 100),))

        await self.db.run(history)
        await self.rows(
            ("exp", "pio01", iso_utc(self.NOW - 1100), "INFO", "before"),
            ("exp", "pio01", iso_utc(self.NOW - 900), "INFO", "first period"),
            ("exp", "pio01", iso_utc(self.NOW - 797), "INFO", "grace"),
            ("exp", "pio01", iso_utc(self.NOW - 700), "INFO", "between"),
            ("exp", "pio01", iso_utc(self.NOW - 50), "INFO", "second period"),
            ("exp", "pio02", iso_utc(self.NOW - 50), "INFO", "other unit"),
        )
        rows = await self.call("GET", "/api/workers/pio01/experiments/exp/logs", expect=200)
        self.assertEqual([r["message"] for r in rows], ["second period", "grace", "first period"])

    async def test_bad_skip_and_unknown_params(self) -> None:
        for path in ("/api/logs", "/api/experiments/exp/logs", "/api/units/pio01/logs", "/api/units/pio01/system_logs",
                     "/api/workers/pio01/experiments/exp/logs"):
            for skip in ("abc", "-1", "1.5", "99999999999999999999", "100000000000"):
                await self.error("GET", f"{path}?skip={skip}", 400, "skip")
            await self.error("GET", f"{path}?skip=1&skip=2", 400, "skip")
        self.assertEqual(await self.call("GET", "/api/experiments/exp/recent_logs?skip=abc", expect=200), [])

    async def test_post_publishes_for_the_unit_or_each_worker_of_the_experiment(self) -> None:
        body = await self.call("POST", "/api/units/pio01/experiments/exp/logs", expect=202, json=POST)
        self.assertEqual(body, {"status": "accepted"})
        topic, payload, qos, retain = self.mqtt.published[-1]
        self.assertEqual((topic, qos, retain), ("pioreactor/pio01/exp/logs/ui/warning", 2, False))
        self.assertEqual(
            json.loads(payload),
            {"message": "hello", "task": "", "source": "app", "level": "WARNING", "timestamp": "2026-01-05T12:00:00.000Z"},
        )
        self.mqtt.published.clear()
        await self.call("POST", "/api/workers/$broadcast/experiments/exp/logs", expect=202, json={**POST, "source_": "profile"})
        self.assertEqual(self.mqtt.published, [])  # nobody is assigned yet
        for unit in ("pio2", "pio1"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
            await self.call("PUT", "/api/experiments/exp/workers", expect=200, json={"pioreactor_unit": unit})
        self.mqtt.published.clear()  # the assignments' own messages
        await self.call("POST", "/api/workers/$broadcast/experiments/exp/logs", expect=202, json={**POST, "source_": "profile"})
        self.assertEqual([p[0] for p in self.mqtt.published], ["pioreactor/pio1/exp/logs/profile/warning", "pioreactor/pio2/exp/logs/profile/warning"])

    async def test_bad_posts(self) -> None:
        path = "/api/units/pio01/experiments/exp/logs"
        await self.error("POST", path, 400, json={"message": "x"})
        await self.error("POST", path, 400, json={**POST, "extra": 1})
        await self.error("POST", path, 400, json={**POST, "level": 3})
        await self.error("POST", path, 400, json={**POST, "level": "a/b"})
        await self.error("POST", path, 400, json={**POST, "source_": "#"})
        await self.error("POST", "/api/units/pio01/experiments/e+x/logs", 400, json=POST)
        self.mqtt.broken = True
        await self.error("POST", path, 503, "broker", json=POST)
        self.assertEqual(self.mqtt.published, [])


class LogPostBrokerTests(TestCase):
    timeout = 30

    async def test_a_broadcast_log_reaches_a_real_broker_once_per_assigned_worker(self) -> None:
        broker = await start_mosquitto(reactor, self)
        db = await start_database(self)

        def assign(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO experiments (experiment, created_at) VALUES ('exp', '2026-01-01T00:00:00.000Z')")
            for unit in ("pio1", "pio2", "pio3"):
                conn.execute("INSERT INTO workers (pioreactor_unit, added_at) VALUES (?, '2026-01-01T00:00:00.000Z')", (unit,))
            for unit in ("pio1", "pio2"):
                conn.execute("INSERT INTO experiment_worker_assignments VALUES (?, 'exp', '2026-01-01T00:00:00.000Z')", (unit,))

        await db.run(assign)
        clients = []
        for name in ("leader", "listener"):
            client = MqttClient(reactor, broker.host, broker.port, name, min_backoff=0.05, max_backoff=0.2)
            client.startService()
            self.addCleanup(client.stopService)
            clients.append(client)
        leader, listener = clients
        inbox = Inbox()
        listener.subscribe("pioreactor/+/exp/logs/#", inbox, qos=2)
        await settle(listener.when_connected())
        await settle(listener.publish("pioreactor/probe/exp/logs/x/y", b"ready", qos=2))
        await inbox.wait_for("pioreactor/probe/exp/logs/x/y", b"ready")
        stub = StubTreq(Router([LogsApi(db, leader, reactor)]))
        code, body = await request(stub, "POST", "/api/workers/$broadcast/experiments/exp/logs", json=POST)
        self.assertEqual((code, body), (202, {"status": "accepted"}))
        for unit in ("pio1", "pio2"):
            message = await inbox.wait_for(f"pioreactor/{unit}/exp/logs/ui/warning", PUBLISHED)
            self.assertEqual(json.loads(message.payload)["message"], "hello")
        self.assertEqual([m.topic for m in inbox.messages if "pio3" in m.topic], [])

