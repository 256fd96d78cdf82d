"""Benchmark of ``GET /api/experiments/<e>/time_series/od_readings`` on a large OD table.

Fills a fresh leader database with 4 units x 48 h of OD readings every 5 s on
2 channels (276,480 rows), serves the time-series routes from a child process
(the leader's Router, site, Database reader threads and answer cache, on
127.0.0.1), and measures ``?target_points=1400&lookback=48`` over 1 and 16
keep-alive connections; then grows the table to ``--grow-to`` rows with other
experiments and measures again, each time in a fresh server process. Sharing of
answers between identical requests is off unless ``--shared SECONDS`` (every
request is answered afresh from the series cache); ``--cache-rows 0`` answers
from SQLite alone. The first request of each server (the cache's fill) is
reported apart, and the server's RSS after the load. With ``--live``, rows arrive
during the measurement as 4 live units would send them (one per series every 5 s,
staggered), so answers cannot simply be served again.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pioreactor_appliance.resources.time_series import CACHE_ROWS
from pioreactor_appliance.store.database import open_connection
from pioreactor_appliance.store.migrations import migrate

PATH = "/api/experiments/bench/time_series/od_readings?target_points=1400&lookback=48"
UNITS = 4
HOURS = 48
EVERY = 5


def fill(db: Path, experiment: str, units: list[str], end: float, rows_per_unit_channel: int) -> None:
    conn = open_connection(db)
    migrate(conn, str(db))
    conn.execute("INSERT OR IGNORE INTO experiments (experiment, created_at) VALUES (?, '2026-01-01T00:00:00.000Z')", (experiment,))
    conn.execute("BEGIN")
    for unit in units:
        for channel in (1, 2):
            conn.execute(
                """WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
                   INSERT INTO od_readings (experiment, pioreactor_unit, timestamp, od_reading, angle, channel)
                   SELECT ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', ? - (? - 1 - i) * ?, 'unixepoch'), 0.5 + i * 1e-5, 90, ? FROM k""",
                (rows_per_unit_channel, experiment, unit, end, rows_per_unit_channel, EVERY, channel),
            )
    conn.execute("COMMIT")
    conn.close()


def row_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM od_readings").fetchone()[0]


def serve(db: Path, port: int, shared: float, cache_rows: int) -> None:
    """The child process: the time-series family behind the leader's router and site."""
    from twisted.internet import reactor

    from pioreactor_appliance.limits import Limits
    from pioreactor_appliance.resources.routing import Router, make_site
    from pioreactor_appliance.resources.time_series import TimeSeriesApi
    from pioreactor_appliance.store.database import Database

    database = Database(db, reactor)
    database.startService()
    reactor.addSystemEventTrigger("before", "shutdown", database.stopService)
    site = make_site(Router([TimeSeriesApi(database, reactor, shared_seconds=shared, cache_rows=cache_rows)]), Limits.defaults())
    reactor.listenTCP(port, site, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


class Live:
    """Stands for the ingest: one new row per series every EVERY s, the series staggered, as real units publish."""

    def __init__(self, db: Path, units: list[str]) -> None:
        self._db = db
        self._series = [(unit, channel) for unit in units for channel in (1, 2)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rows = 0

    def __enter__(self) -> Live:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self._db, isolation_level=None)
        gap = EVERY / len(self._series)
        while not self._stop.is_set():
            for unit, channel in self._series:
                if self._stop.wait(gap):
                    break
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
                conn.execute(
                    "INSERT INTO od_readings (experiment, pioreactor_unit, timestamp, od_reading, angle, channel) VALUES ('bench', ?, ?, 0.6, 90, ?)",
                    (unit, stamp, channel),
                )
                self.rows += 1
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(port: int, connections: int, requests: int, max_seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    remaining = [requests]

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if remaining[0] <= 0 or time.perf_counter() > deadline:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            conn.request("GET", PATH)
            response = conn.getresponse()
            body = response.read()
            took = time.perf_counter() - start
            with lock:
                if response.status != 200 or not body.startswith(b'{"series":["pio00-1"'):
                    errors += 1
                latencies.append(took)
        conn.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "connections": connections,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def measure(db: Path, shared: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db), "--port", str(port), "--shared", str(shared), "--cache-rows", str(args.cache_rows)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise SystemExit("the server did not start")
        time.sleep(0.5)
        rss_start = rss_mb(child.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        began = time.perf_counter()
        conn.request("GET", PATH)
        first = json.loads(conn.getresponse().read())
        first_ms = round((time.perf_counter() - began) * 1000, 1)
        conn.close()
        points = sum(len(series) for series in first["data"])
        print(json.dumps({"first_request_ms": first_ms, "rss_mb_at_start": rss_start}), flush=True)
        results = []
        load(port, 1, 20, 10)  # warm the page cache and the reader threads
        for connections, requests in ((1, args.requests_c1), (16, args.requests_c16)):
            if args.live:
                with Live(db, [f"pio{i:02d}" for i in range(UNITS)]) as live:
                    result = load(port, connections, requests, args.max_seconds)
                result["live_rows_inserted"] = live.rows
            else:
                result = load(port, connections, requests, args.max_seconds)
            result.update({"shared_seconds": shared, "cache_rows": args.cache_rows, "series": len(first["series"]), "points": points,
                           "first_request_ms": first_ms, "rss_mb": rss_mb(child.pid)})
            results.append(result)
            print(json.dumps(result), flush=True)
        return results
    finally:
        child.terminate()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--shared", type=float, default=0.0, help="share identical answers for this many seconds (default off)")
    parser.add_argument("--cache-rows", type=int, default=CACHE_ROWS, help="series cache budget; 0 reads SQLite alone")
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--requests-c16", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=20)
    parser.add_argument("--grow-to", type=int, default=10_000_000)
    parser.add_argument("--live", action="store_true", help="insert rows as 4 live units would while measuring")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.shared, args.cache_rows)
        return
    report: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "pioreactor.sqlite"
        units = [f"pio{i:02d}" for i in range(UNITS)]
        fill(db, "bench", units, time.time(), HOURS * 3600 // EVERY)
        for stage in ("base", "grown"):
            if stage == "grown":
                # Older experiments of the same units fill the table up to --grow-to rows.
                per_experiment = UNITS * 2 * (HOURS * 3600 // EVERY)
                n = 0
                while row_count(db) + per_experiment <= args.grow_to:
                    fill(db, f"older{n:03d}", units, time.time() - (n + 1) * HOURS * 3600, HOURS * 3600 // EVERY)
                    n += 1
            rows = row_count(db)
            print(f"od_readings rows: {rows}", flush=True)
            for result in measure(db, args.shared, args):
                report["runs"].append({"stage": stage, "rows": rows, **result})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
