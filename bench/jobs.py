"""Jobs benchmark: run request to ``ready``, and one unit's memory and CPU with the core jobs running.

Starts a fresh ``LocalCluster`` (leader + one worker, each on its own simulated
Pioreactor, real mosquitto), then on the worker:

1. **Start latency.** For each job, ``--runs`` times: POST
   ``/unit_api/jobs/run/job_name/<job>`` and time until the job's retained
   ``$state`` says ``ready`` on the broker (a paho client in this process
   watches it), then stop it and wait for ``disconnected``.
2. **Steady state.** Starts stirring, OD reading, the thermostat, growth rate
   and a chemostat together, lets them warm up, then samples the worker
   process's RSS and CPU time from ``/proc`` over ``--seconds``.

The simulator is a separate process (it stands for the hardware), so its CPU
is not counted against the unit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.cluster import ClusterError, LocalCluster, request

EXPERIMENT = "bench"
TIMEOUT = 10.0
DEBOUNCE = 1.1  # the unit refuses a second run of the same job within a second
LATENCY_JOBS = {
    "stirring": {"target_rpm": 400},
    "temperature_automation": {
        "automation_name": "thermostat",
        "target_temperature": 30,
    },
    "growth_rate_calculating": {},
    "od_reading": {},
    "led_automation": {"automation_name": "silent"},
}
STEADY_JOBS = [
    ("stirring", {"target_rpm": 400}),
    ("od_reading", {}),
    (
        "temperature_automation",
        {"automation_name": "thermostat", "target_temperature": 30},
    ),
    ("growth_rate_calculating", {}),
    (
        "dosing_automation",
        {"automation_name": "chemostat", "exchange_volume_ml": 0.5, "duration": 1},
    ),
]


class States:
    """The latest ``$state`` of every job, from the broker, with the time each arrived."""

    def __init__(self, host: str, port: int) -> None:
        self._lock = threading.Condition()
        self._seen: dict[str, tuple[str, float]] = {}
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}"
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda client, *_: client.subscribe(
            "pioreactor/+/+/+/$state", qos=1
        )
        self._client.connect(host, port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        job = message.topic.split("/")[3]
        with self._lock:
            self._seen[job] = (message.payload.decode(), time.perf_counter())
            self._lock.notify_all()

    def wait_for(self, job: str, state: str, after: float) -> float:
        """When ``job`` was seen in ``state`` at or after ``after`` (perf_counter seconds)."""
        deadline = time.monotonic() + TIMEOUT
        with self._lock:
            while True:
                seen = self._seen.get(job)
                if seen is not None and seen[0] == state and seen[1] >= after:
                    return seen[1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{job} not {state} within {TIMEOUT} s (last seen: {seen})"
                    )
                self._lock.wait(remaining)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def run(address: str, job: str, options: dict[str, Any]) -> None:
    body = {"options": options, "env": {"EXPERIMENT": EXPERIMENT}}
    status, answer = request(
        address, "POST", f"/unit_api/jobs/run/job_name/{job}", body
    )
    if status != 202:
        raise RuntimeError(f"run {job}: {status} {answer}")


def stop(address: str, job: str) -> None:
    status, answer = request(address, "POST", "/unit_api/jobs/stop", {"job_name": job})
    if status != 202:
        raise RuntimeError(f"stop {job}: {status} {answer}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=10,
        help="starts per job for the latency (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds the steady-state jobs run before measuring",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="seconds of steady-state measurement",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="pioreactor-bench-jobs-") as tmp:
        try:
            cluster = LocalCluster(Path(tmp), workers=1, fresh=True)
            cluster.start()
        except ClusterError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
        states = None
        try:
            cluster.register_workers()
            worker = cluster.units[1]
            assert worker.process is not None
            pid = worker.process.pid
            host, _, port = cluster.mqtt_address.partition(":")
            states = States(host, int(port))
            report["rss_kb_idle"] = rss_kb(pid)

            latencies: dict[str, list[float]] = {}
            for job, options in LATENCY_JOBS.items():
                latencies[job] = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    run(worker.address, job, options)
                    ready = states.wait_for(job, "ready", started)
                    latencies[job].append((ready - started) * 1000)
                    stop(worker.address, job)
                    states.wait_for(job, "disconnected", ready)
                    time.sleep(DEBOUNCE)
                ms = sorted(latencies[job])
                print(
                    f"{job:<26} run -> ready: median {statistics.median(ms):6.1f} ms, max {ms[-1]:6.1f} ms ({len(ms)} runs)",
                    flush=True,
                )
            report["run_to_ready_ms"] = {
                job: {"median": statistics.median(v), "max": max(v), "runs": v}
                for job, v in latencies.items()
            }

            started = time.perf_counter()
            for job, options in STEADY_JOBS:
                run(worker.address, job, options)
                states.wait_for(job, "ready", started)
            print(
                f"steady state: {', '.join(j for j, _ in STEADY_JOBS)} ready; warming up {args.warmup:g} s",
                flush=True,
            )
            time.sleep(args.warmup)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            peak = rss_kb(pid)
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1.0)
                peak = max(peak, rss_kb(pid))
            cpu_percent = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            for job, _ in STEADY_JOBS:
                status, body = request(
                    worker.address, "GET", f"/unit_api/jobs/running/{job}"
                )
                if status != 200 or not body:
                    raise RuntimeError(
                        f"{job} stopped during the measurement: {status} {body}"
                    )
            report["steady"] = {
                "jobs": [j for j, _ in STEADY_JOBS],
                "rss_kb_peak": peak,
                "cpu_percent_of_one_core": round(cpu_percent, 2),
                "seconds": args.seconds,
            }
            print(
                f"steady state over {args.seconds:g} s: RSS peak {peak / 1024:.1f} MB, CPU {cpu_percent:.2f} % of one core",
                flush=True,
            )
        except (RuntimeError, TimeoutError, ClusterError) as e:
            print(f"bench: {e}", file=sys.stderr)
            print(f"worker log: {cluster.units[1].log_path}", file=sys.stderr)
            return 1
        finally:
            if states is not None:
                states.close()
            cluster.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
