"""``scripts/cluster``: run a leader and N workers on this machine until Ctrl-C.

The state (each unit's data dir, the broker's persistence, the logs) lives in
``.cluster/`` at the repo root so a restart keeps experiments and workers;
``--fresh`` starts from nothing.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.cluster import ClusterError, LocalCluster

STATE_DIR = ROOT / ".cluster"


class Stop(Exception):
    """Raised from the signal handler so start-up and the wait loop both unwind."""


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def banner(cluster: LocalCluster) -> str:
    leader = cluster.leader.url
    lines = [
        "",
        "Pioreactor cluster is up, each unit on its own simulated Pioreactor (a pigpiod look-alike).",
        f"  leader API     {leader}/api",
    ]
    for unit in cluster.units:
        lines.append(
            f"  {unit.name:<14} {unit.url}/unit_api   pigpio 127.0.0.1:{unit.pigpio_port}   (log {unit.log_path.relative_to(ROOT)})"
        )
    lines += [
        f"  MQTT broker    {cluster.mqtt_address}",
        f"  state          {STATE_DIR.relative_to(ROOT)}/",
        "",
        "Try:",
        f"  curl -s {leader}/api/workers",
        f"  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"experiment\":\"demo\"}}' {leader}/api/experiments",
        f"  curl -s {cluster.units[-1].url}/unit_api/health",
        f"  curl -s '{leader}/api/units/$broadcast/versions/app'",
        f"  curl -s -X PUT -H 'Content-Type: application/json' -d '{{\"pioreactor_unit\":\"{cluster.units[-1].name}\"}}' {leader}/api/experiments/demo/workers",
        f"  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"options\":{{\"target_rpm\":500}}}}' "
        f"{leader}/api/workers/{cluster.units[-1].name}/jobs/run/job_name/stirring/experiments/demo",
        f"  curl -s {leader}/api/units/{cluster.units[-1].name}/jobs/running   (more in the README, 'Running jobs')",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers besides the leader (default 2)")
    parser.add_argument(
        "--base-port", type=int, default=None,
        help="leader on P, worker i on P+i, MQTT on P+N+1, unit i's simulator on P+N+2+i (default: free ports)",
    )  # fmt: skip
    parser.add_argument(
        "--sim-speed", type=float, default=1.0,
        help="how much faster than real time the simulated cultures grow and vials heat (default 1)",
    )  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="wipe .cluster/ first")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.sim_speed <= 0:
        parser.error("--sim-speed must be above 0")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalCluster(STATE_DIR, workers=args.workers, base_port=args.base_port, fresh=args.fresh, sim_speed=args.sim_speed)
    try:
        print(f"starting mosquitto, {args.workers + 1} simulated Pioreactors and their units (logs in .cluster/)...", flush=True)
        cluster.start()
        cluster.register_workers()
        print(banner(cluster), flush=True)
        while True:
            dead = cluster.exited()
            if dead:
                for unit in dead:
                    print(f"{unit.name} exited with status {unit.process.returncode if unit.process else '?'}; "
                          f"see {unit.log_path}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except Stop as why:
        print(f"\n{why}: stopping...", flush=True)
        return 0
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
