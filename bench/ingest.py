"""Ingest benchmark: MQTT messages/s the leader stores in SQLite, and whether any were lost.

Starts a private mosquitto, then in this process the leader's ``Database`` and
``IngestService`` (as ``tap.py`` wires them), and in child processes publishers
that stand for workers: each sends its share of ``--rate`` messages/s for
``--seconds``, the mix a Pioreactor sends (OD per channel at QoS 2, growth rate,
filtered OD, temperature, RPM, dosing and LED events, logs at QoS 1), with
payloads shaped as our jobs publish them. Once the publishers are done it waits
for the ingest to drain, then counts the rows of each table against what was
published: any difference is a loss (or a duplicate), and the exit status is 1.

The publishers are separate processes, so they do not share the ingest's GIL,
but they do share the machine's cores: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# topic suffix -> (table, QoS, share of the messages); the OD reading dominates, as on a real cluster.
MIX: dict[str, tuple[str, int, int]] = {
    "od_reading/od1": ("od_readings", 2, 4),
    "od_reading/od2": ("od_readings", 2, 4),
    "growth_rate_calculating/growth_rate": ("growth_rates", 2, 2),
    "growth_rate_calculating/od_filtered": ("od_readings_filtered", 2, 2),
    "temperature_automation/temperature": ("temperature_readings", 2, 1),
    "stirring/measured_rpm": ("stirring_rates", 2, 1),
    "dosing_events": ("dosing_events", 2, 1),
    "led_change_events": ("led_change_events", 0, 1),
    "logs/app/info": ("logs", 1, 1),
}
TICK = 0.01  # seconds between a publisher's bursts


def payload(suffix: str, i: int, timestamp: str) -> str:
    value = 0.001 * (i % 1000)
    if suffix.startswith("od_reading/od"):
        channel = suffix[-1]
        body: dict[str, Any] = {"calibrated": 0, "timestamp": timestamp, "angle": "90", "od": value, "channel": channel, "ir_led_intensity": 80.0}
    elif suffix == "growth_rate_calculating/growth_rate":
        body = {"growth_rate": value, "timestamp": timestamp}
    elif suffix == "growth_rate_calculating/od_filtered":
        body = {"od_filtered": value, "timestamp": timestamp}
    elif suffix == "temperature_automation/temperature":
        body = {"timestamp": timestamp, "temperature": 30 + value}
    elif suffix == "stirring/measured_rpm":
        body = {"measured_rpm": 500 + value, "timestamp": timestamp}
    elif suffix == "dosing_events":
        body = {"volume_change": value, "event": "add_media", "source_of_event": "bench", "timestamp": timestamp}
    elif suffix == "led_change_events":
        body = {"channel": "B", "intensity": value, "source_of_event": "bench", "timestamp": timestamp}
    else:
        body = {"message": f"line {i}", "level": "INFO", "task": "bench", "timestamp": timestamp, "source": "app"}
    return json.dumps(body, separators=(",", ":"))


def publish(host: str, port: int, unit: str, rate: float, seconds: float) -> None:
    """A child process: publish at ``rate`` msg/s for ``seconds``; print per-table counts of what the broker took."""
    from paho.mqtt import client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from pioreactor_appliance.timestamps import iso_utc

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{unit}", protocol=paho.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, 60)
    client.loop_start()
    schedule = [s for s, (_, _, share) in MIX.items() for _ in range(share)]
    counts: dict[str, int] = {}
    infos = []
    start = time.perf_counter()
    sent = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) + 1
        timestamp = iso_utc(time.time())
        while sent < due:
            suffix = schedule[sent % len(schedule)]
            table, qos, _ = MIX[suffix]
            info = client.publish(f"pioreactor/{unit}/bench/{suffix}", payload(suffix, sent, timestamp), qos=qos)
            if qos:
                infos.append(info)
            counts[table] = counts.get(table, 0) + 1
            sent += 1
        time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    for info in infos:
        info.wait_for_publish(timeout=60)
    lost = sum(1 for info in infos if not info.is_published())
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"counts": counts, "unconfirmed": lost, "seconds": time.perf_counter() - start}))


def start_broker(directory: Path, port: int, max_inflight: int) -> subprocess.Popen[bytes]:
    from tests.mosquitto import HOST, find_mosquitto

    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} {HOST}\nallow_anonymous true\nmax_inflight_messages {max_inflight}\n"
        "max_queued_messages 1000000\n"
    )
    return subprocess.Popen([find_mosquitto(), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(args: argparse.Namespace, reactor: Any, directory: Path) -> int:
    from twisted.internet.task import deferLater

    from pioreactor_appliance.ingest.service import (
        IngestService,
        IngestSettings,
        ingest_client_id,
    )
    from pioreactor_appliance.mqtt import MqttClient
    from pioreactor_appliance.store.database import Database
    from tests.mosquitto import HOST, free_port

    port = free_port()
    broker = start_broker(directory, port, args.max_inflight)
    try:
        await deferLater(reactor, 0.5)
        db = Database(directory / "pioreactor.sqlite", reactor)
        db.startService()
        await db.opened
        settings = IngestSettings(args.batch_size, args.flush_interval_ms / 1000, args.max_pending, args.idle_flush_ms / 1000)

        async def start_ingest() -> IngestService:
            mqtt = MqttClient(reactor, HOST, port, ingest_client_id("leader"), clean_session=False, manual_ack=True)
            ingest = IngestService(mqtt, db, reactor, settings)
            ingest.startService()
            await mqtt.when_connected()
            return ingest

        ingest = await start_ingest()
        await deferLater(reactor, 0.5)  # the SUBACK
        if args.mode == "drain":
            await ingest.stopService()  # the leader is down: the broker queues everything in its session

        units = [f"pio{i:02d}" for i in range(args.publishers)]
        children = [
            subprocess.Popen(
                [sys.executable, __file__, "--publish", HOST, str(port), unit, str(args.rate / args.publishers), str(args.seconds)],
                stdout=subprocess.PIPE,
            )
            for unit in units
        ]
        started = reactor.seconds()
        stored_at: list[tuple[float, int]] = []
        while any(child.poll() is None for child in children):
            await deferLater(reactor, 1.0)
            stored_at.append((reactor.seconds() - started, ingest.counters.rows_stored))
        published_at = reactor.seconds() - started
        if args.mode == "drain":
            started = reactor.seconds()
            ingest = await start_ingest()
        results = [json.loads(child.stdout.read()) for child in children if child.stdout is not None]
        expected: dict[str, int] = {}
        for result in results:
            for table, n in result["counts"].items():
                expected[table] = expected.get(table, 0) + n
        qos0 = {table for table, qos, _ in MIX.values() if qos == 0}
        if args.mode == "drain":  # the broker keeps QoS 1/2 messages for an absent session, never QoS 0 ones
            expected = {t: n for t, n in expected.items() if t not in qos0}
        total = sum(expected.values())
        deadline = reactor.seconds() + args.drain_timeout
        while ingest.counters.received < total and reactor.seconds() < deadline:
            await deferLater(reactor, 0.1)
            if args.mode == "drain":
                stored_at.append((reactor.seconds() - started, ingest.counters.rows_stored))
        await ingest.stopService()  # stores and acknowledges the last batch
        drained_at = reactor.seconds() - started

        def count(conn: Any) -> dict[str, int]:
            return {t: conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in expected}

        rows = await db.read(count)
        await db.stopService()
    finally:
        broker.terminate()
        broker.wait()

    # Sustained rate: rows stored per second while publishing (live), or while draining the session (drain).
    window = [b for b in stored_at if b[0] <= published_at] if args.mode == "live" else [(0.0, 0), (drained_at, sum(rows.values()))]
    sustained = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else float("nan")
    missing = {t: expected[t] - rows.get(t, 0) for t in expected if expected[t] != rows.get(t, 0)}
    report = {
        "mode": args.mode,
        "target_rate": args.rate,
        "seconds": args.seconds,
        "publishers": args.publishers,
        "broker_max_inflight_messages": args.max_inflight,
        "batch_size": args.batch_size,
        "flush_interval_ms": args.flush_interval_ms,
        "idle_flush_ms": args.idle_flush_ms,
        "published": total,
        "publisher_unconfirmed": sum(r["unconfirmed"] for r in results),
        "publish_seconds": round(published_at, 2),
        "offered_rate": round(total / published_at, 1),
        "stored_rows": sum(rows.values()),
        "sustained_rows_per_second": round(sustained, 1),
        "all_stored_after_seconds": round(drained_at, 2),
        "overall_rows_per_second": round(sum(rows.values()) / drained_at, 1),
        "received": ingest.counters.received,
        "malformed": ingest.counters.malformed,
        "batches": ingest.counters.batches,
        "missing_or_extra_by_table": missing,
        "per_second": [n for _, n in stored_at],
    }
    print(json.dumps(report, indent=2) if args.json is None else "")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(json.dumps({k: v for k, v in report.items() if k != "per_second"}, indent=2))
    return 0 if not missing and report["publisher_unconfirmed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--publish":
        host, port, unit, rate, seconds = argv[1:6]
        publish(host, int(port), unit, float(rate), float(seconds))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", choices=("live", "drain"), default="live",
        help="live: the ingest runs while publishing; drain: it is down while publishing, then stores the backlog",
    )
    parser.add_argument("--rate", type=float, default=5000, help="messages/s, all publishers together")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes (workers)")
    parser.add_argument("--max-inflight", type=int, default=1000, help="the broker's max_inflight_messages")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--flush-interval-ms", type=int, default=100)
    parser.add_argument("--max-pending", type=int, default=20000)
    parser.add_argument("--idle-flush-ms", type=int, default=5)
    parser.add_argument("--drain-timeout", type=float, default=60)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    directory = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    status: list[int] = []

    def done(result: Any) -> None:
        status.append(result if isinstance(result, int) else 2)
        if not isinstance(result, int):
            result.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run(args, reactor, directory)).addBoth(done))
    reactor.run()
    shutil.rmtree(directory, ignore_errors=True)
    return status[0] if status else 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
