"""Export benchmark: a one-day export of 400,000 OD rows, timed through the API to the finished task.

Starts a fresh ``LocalCluster`` (leader only), creates the experiment
``bench``, seeds ``od_readings`` straight into the leader's SQLite file (one
day, spread over the units), then ``--runs`` times POSTs
``/api/datasets/exportable/export`` and polls the task every 10 ms until it is
done. The time is from sending the POST to the poll that sees ``succeeded``.
It prints each run with the leader's CPU time for it (the figure that does
not depend on what else the machine runs), the median, the zip's size, the leader's memory, and
checks the zip's row count. The exit status is 1 if a run failed or the
median is over ``--target`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import UNLIMITED, memory_kb  # bench/bench.py, beside this script
from tools.cluster import ClusterError, LocalCluster, request

DATABASE = "storage/pioreactor.sqlite"
DAY_START = 1767571200.0  # 2026-01-05T00:00:00Z
POLL_INTERVAL = 0.010


def iso(seconds: float) -> str:
    moment = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{round(seconds * 1000) % 1000:03d}Z"


def seed(path: Path, rows: int, units: int) -> float:
    """``rows`` OD readings over one day, ``units`` units taking turns; the seconds it took."""
    started = time.perf_counter()
    step = 86400.0 / rows
    conn = sqlite3.connect(path, timeout=30)
    with conn:
        conn.executemany(
            "INSERT INTO od_readings (experiment, pioreactor_unit, timestamp, od_reading, angle, channel) VALUES (?, ?, ?, ?, ?, ?)",
            (("bench", f"pio{i % units + 1:02d}", iso(DAY_START + i * step), 0.05 + i * 1e-6, 90, 2) for i in range(rows)),
        )
    conn.close()
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time, from /proc: what the export cost whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def export_once(address: str, body: dict[str, object], timeout: float) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    status, accepted = request(address, "POST", "/api/datasets/exportable/export", body)
    if status != 202:
        raise ClusterError(f"export answered {status}: {accepted}")
    deadline = started + timeout
    while time.perf_counter() < deadline:
        status, polled = request(address, "GET", accepted["result_url_path"])
        if status == 200:
            elapsed = time.perf_counter() - started
            if polled["status"] != "succeeded":
                raise ClusterError(f"export failed: {polled}")
            return elapsed, polled["result"]
        time.sleep(POLL_INTERVAL)
    raise ClusterError(f"export not done after {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000, help="OD rows over the day (default 400000)")
    parser.add_argument("--units", type=int, default=4, help="units the rows are spread over (default 4)")
    parser.add_argument("--runs", type=int, default=5, help="exports to time (default 5)")
    parser.add_argument("--partition-by-unit", action="store_true", help="one CSV per unit instead of one CSV")
    parser.add_argument("--target", type=float, default=2.0, help="the median must be under this, in seconds (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    body = {
        "datasets": ["od_readings"],
        "experiment": "bench",
        "partition_by_unit": args.partition_by_unit,
        "partition_by_experiment": False,
        "start_time": iso(DAY_START),
        "end_time": iso(DAY_START + 86400 - 0.001),
    }
    with tempfile.TemporaryDirectory(prefix="pioreactor-bench-export-") as tmp:
        try:
            cluster = LocalCluster(Path(tmp), workers=0, fresh=True, extra_config=UNLIMITED)
            cluster.start()
        except ClusterError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
        try:
            address = cluster.leader.address
            status, created = request(address, "POST", "/api/experiments", {"experiment": "bench"})
            if status != 201:
                print(f"bench: cannot create experiment 'bench': {status} {created}", file=sys.stderr)
                return 1
            seeded = seed(cluster.leader.data_dir / DATABASE, args.rows, args.units)
            print(f"seeded {args.rows} od_readings rows over one day in {seeded:.1f} s", flush=True)
            assert cluster.leader.process is not None
            pid = cluster.leader.process.pid
            before = memory_kb(pid)
            load = Path("/proc/loadavg").read_text().split()[:3]
            times = []
            cpu = []
            result: dict[str, object] = {}
            for run in range(args.runs):
                cpu_before = cpu_seconds(pid)
                elapsed, result = export_once(address, body, timeout=120)
                times.append(elapsed)
                cpu.append(cpu_seconds(pid) - cpu_before)
                print(f"run {run + 1}: {elapsed * 1000:.0f} ms (leader CPU {cpu[-1] * 1000:.0f} ms)  {result['filename']}", flush=True)
            after = memory_kb(pid)
            path = cluster.leader.data_dir / "exports" / str(result["filename"])
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read("manifest.json"))
            exported = manifest["datasets"][0]["row_count"]
            size = path.stat().st_size
        except ClusterError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
        finally:
            cluster.stop()

    median = statistics.median(times)
    print(f"load average before the runs: {load}")
    print(f"median {median * 1000:.0f} ms (leader CPU median {statistics.median(cpu) * 1000:.0f} ms), best {min(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms; "
          f"{exported} rows, zip {size / 1e6:.1f} MB; leader memory before {before}, after {after}")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "times_s": times, "median_s": median, "leader_cpu_s": cpu, "load_average": load, "zip_bytes": size,
                                         "exported_rows": exported, "memory_before_kb": before, "memory_after_kb": after}, indent=2))
    ok = exported == args.rows and median < args.target
    if not ok:
        print(f"bench: FAILED (rows {exported} of {args.rows}, median {median:.2f} s, target {args.target} s)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
