"""Broadcast benchmark: ``$broadcast`` through the leader to many units, end to end through task_results.

Starts a private mosquitto, a leader process, and ``--workers`` real unit services
spread over ``--hosts`` worker processes (each unit a full ``build_service`` stack on
its own loopback port, with its own simulated Pioreactor in the same process), then
registers them and times ``GET /api/units/$broadcast/versions/app`` from the request to
the 200 of ``/unit_api/task_results/<id>``, polled every 10 ms on one keep-alive connection:

1. ``healthy``: the leader and 31 workers (32 units), ``--runs`` times;
2. ``silent``: the same 32 units with one worker replaced by an address that accepts
   connections and never answers a byte; each run must take the per-unit timeout
   (``--timeout``) and at most 50 ms more;
3. ``all``: the leader and every worker (``--workers`` + 1 units, default 100).

Every run's result is checked: each unit has its envelope, healthy units ok, the silent
one a ``task_timeout``. Median, min and max per scenario are printed (``--json`` writes them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
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

from bench import Client, OpError  # bench/bench.py: this directory is on sys.path
from tools.cluster import ClusterError, find_mosquitto, log_tail, port_is_free, request

BROADCAST = "/api/units/$broadcast/versions/app"
POLL_INTERVAL = 0.010
HEALTHY_UNITS = 32
SILENT = "silent"
# The benchmark times requests, so the per-client rate limit of expensive routes is lifted.
CONFIG = """[cluster.topology]
leader_hostname=leader
leader_address={leader}
[cluster.addresses]
{addresses}[limits]
expensive_per_minute=100000000
expensive_burst=100000000
[appliance]
fanout_timeout_seconds={timeout}
"""


# --- the unit processes ---------------------------------------------------------


def serve(spec_path: str) -> None:
    """Run the units of one spec file in this process until SIGTERM (the child side of ``--serve``)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pioreactor_appliance.config import Config
    from pioreactor_appliance.hardware.sim.model import build_pioreactor
    from pioreactor_appliance.hardware.sim.server import PigpioFactory
    from pioreactor_appliance.tap import Settings, build_service

    spec = json.loads(Path(spec_path).read_text())
    log = open(spec["log"], "a")  # noqa: SIM115 (open for the process's lifetime)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)

    async def start() -> None:
        for seed, unit in enumerate(spec["units"]):
            daemon, model = build_pioreactor(reactor, seed=seed)
            model.start()
            await TCP4ServerEndpoint(reactor, unit["pigpio_port"], interface="127.0.0.1").listen(PigpioFactory(daemon))
            data_dir = Path(unit["data_dir"])
            settings = Settings(
                role=unit["role"],
                unit=unit["name"],
                data_dir=data_dir,
                listen=f"tcp:{unit['port']}:interface=127.0.0.1",
                mqtt=("127.0.0.1", spec["mqtt_port"]),
                pigpio=("127.0.0.1", unit["pigpio_port"]),
                config=Config.load(data_dir),
            )
            service = build_service(settings, reactor)
            service.startService()
            reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    from twisted.internet.defer import Deferred

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(start()))
    reactor.run()


# --- the parent: cluster, silent unit, measurements -----------------------------------


class SilentUnit:
    """A listening socket that accepts connections and never answers a byte: a hung unit."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def listen_ports(count: int, start: int) -> list[int]:
    """``count`` ports free now, from ``start`` up."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port_is_free(port):
            ports.append(port)
        port += 1
    return ports


class Cluster:
    def __init__(self, state: Path, workers: int, hosts: int, timeout: float, silent_port: int, base_port: int) -> None:
        self.state = state
        self.names = ["leader"] + [f"pio{i:03d}" for i in range(1, workers + 1)]
        # Every port chosen up front, below the kernel's ephemeral range: hundreds of outgoing
        # connections (MQTT, the fan-out) would otherwise take ports picked free a moment before.
        ports = listen_ports(2 * len(self.names) + 1, base_port)
        self.ports = dict(zip(self.names, ports, strict=False))
        self.pigpio_ports = dict(zip(self.names, ports[len(self.names) :], strict=False))
        self.mqtt_port = ports[-1]
        self.timeout = timeout
        self.silent_port = silent_port
        self.hosts = hosts
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def leader(self) -> str:
        return f"127.0.0.1:{self.ports['leader']}"

    def start(self) -> None:
        conf = self.state / "mosquitto.conf"
        conf.write_text(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self._spawn([find_mosquitto(), "-c", str(conf)], "mosquitto")
        addresses = "".join(f"{name}=127.0.0.1:{port}\n" for name, port in self.ports.items())
        addresses += f"{SILENT}=127.0.0.1:{self.silent_port}\n"
        config = CONFIG.format(leader=self.leader, addresses=addresses, timeout=self.timeout)
        specs: list[list[dict[str, Any]]] = [[] for _ in range(self.hosts + 1)]
        for i, name in enumerate(self.names):
            data_dir = self.state / name
            data_dir.mkdir()
            (data_dir / "config.ini").write_text(config)
            unit = {
                "name": name,
                "role": "leader" if name == "leader" else "worker",
                "port": self.ports[name],
                "pigpio_port": self.pigpio_ports[name],
                "data_dir": str(data_dir),
            }
            specs[0 if i == 0 else 1 + (i - 1) % self.hosts].append(unit)
        time.sleep(0.2)  # the broker binds
        for index, units in enumerate(specs):
            if units:
                spec = self.state / f"host{index}.json"
                spec.write_text(json.dumps({"units": units, "mqtt_port": self.mqtt_port, "log": str(self.state / f"host{index}.log")}))
                self._spawn([sys.executable, str(Path(__file__).resolve()), "--serve", str(spec)], f"host{index}")
        for name, port in self.ports.items():
            self._wait_healthy(name, port)

    def _spawn(self, cmd: list[str], name: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.state / f"{name}.out", "ab") as out:  # the child keeps its own copy
            self.processes.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True))

    def _wait_healthy(self, name: str, port: int, seconds: float = 600.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            exited = [p.args for p in self.processes if p.poll() is not None]
            if exited:
                raise ClusterError(f"{exited} exited:\n{self._logs()}")
            try:
                if request(f"127.0.0.1:{port}", "GET", "/unit_api/health", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ClusterError(f"{name} not healthy after {seconds:.0f} s:\n{self._logs()}")

    def _logs(self) -> str:
        return "\n".join(f"{path.name}:\n{log_tail(path, 10)}" for path in sorted(self.state.glob("host*.*")) if path.suffix != ".json")

    def register(self, name: str) -> None:
        status, body = request(self.leader, "PUT", "/api/workers", {"pioreactor_unit": name})
        if status != 201:
            raise ClusterError(f"PUT /api/workers {name} -> {status}: {body}")

    def unregister(self, name: str) -> None:
        status, body = request(self.leader, "DELETE", f"/api/workers/{name}")
        if status != 202:
            raise ClusterError(f"DELETE /api/workers/{name} -> {status}: {body}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def broadcast(client: Client, units: list[str], silent: str | None) -> float:
    """One $broadcast round trip in seconds; its result must hold every unit's right envelope."""
    started = time.perf_counter()
    status, payload = client.call("GET", BROADCAST)
    if status != 202:
        raise OpError(f"HTTP {status}: {payload[:200]!r}")
    path = json.loads(payload)["result_url_path"]
    while True:
        status, payload = client.call("GET", path)
        if status == 200:
            break
        time.sleep(POLL_INTERVAL)
    elapsed = time.perf_counter() - started
    result = json.loads(payload)["result"]
    if sorted(result) != sorted(units):
        raise OpError(f"the result names {sorted(result)}, not {sorted(units)}")
    for unit, envelope in result.items():
        expected = unit != silent
        if envelope["ok"] is not expected or (not expected and envelope["error"]["kind"] != "task_timeout"):
            raise OpError(f"{unit}: unexpected envelope {envelope}")
    return elapsed


def scenario(client: Client, name: str, units: list[str], runs: int, silent: str | None = None) -> dict[str, Any]:
    broadcast(client, units, silent)  # warm-up: connections to every unit
    times = [broadcast(client, units, silent) for _ in range(runs)]
    figures = {
        "scenario": name,
        "units": len(units),
        "runs": runs,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
    }
    print(f"{name:8} {len(units):4d} units  median {figures['median_ms']:8.1f} ms  min {figures['min_ms']:8.1f}  max {figures['max_ms']:8.1f}  ({runs} runs)")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=99, help="workers started (the last scenario broadcasts to all, plus the leader)")
    parser.add_argument("--hosts", type=int, default=4, help="worker processes the workers are spread over")
    parser.add_argument("--runs", type=int, default=20, help="timed broadcasts per scenario (the silent one: a quarter of it)")
    parser.add_argument("--timeout", type=float, default=1.0, help="the leader's per-unit fan-out timeout, seconds")
    parser.add_argument("--base-port", type=int, default=20000, help="the first port tried for the units, simulators and broker")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.workers < HEALTHY_UNITS - 1:
        parser.error(f"--workers must be at least {HEALTHY_UNITS - 1}")
    silent = SilentUnit()
    with tempfile.TemporaryDirectory(prefix="pioreactor-broadcast-") as tmp:
        cluster = Cluster(Path(tmp), args.workers, args.hosts, args.timeout, silent.port, args.base_port)
        try:
            started = time.monotonic()
            cluster.start()
            print(f"{len(cluster.names)} units up in {time.monotonic() - started:.1f} s ({args.hosts} worker processes, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()})")
            first = cluster.names[:HEALTHY_UNITS]
            for name in first[1:]:
                cluster.register(name)
            client = Client(cluster.leader)
            results = [scenario(client, "healthy", first, args.runs)]

            cluster.unregister(first[-1])
            cluster.register(SILENT)
            with_silent = [*first[:-1], SILENT]
            figures = scenario(client, "silent", with_silent, max(3, math.ceil(args.runs / 4)), silent=SILENT)
            figures["limit_ms"] = (args.timeout + 0.050) * 1000
            results.append(figures)
            cluster.unregister(SILENT)

            for name in cluster.names[HEALTHY_UNITS - 1 :]:
                cluster.register(name)
            results.append(scenario(client, "all", cluster.names, args.runs))
            client.close()
        finally:
            cluster.stop()
    ok = results[0]["median_ms"] <= 150 and results[1]["max_ms"] <= results[1]["limit_ms"]
    print(f"targets: 32 healthy median <= 150 ms; silent max <= {results[1]['limit_ms']:.0f} ms: {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"timeout_seconds": args.timeout, "results": results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
