"""HTTP benchmark of a local cluster: requests/s, p50/p99 latency and the leader's memory.

Starts a fresh ``LocalCluster`` (real mosquitto, one ``twistd`` per unit, all
on 127.0.0.1), then drives each endpoint with 1 and 16 concurrent keep-alive
connections. Every measurement is bounded in request count *and* time, so a
slow or broken endpoint cannot make the run hang; non-2xx answers and
connection failures are counted as errors, not hidden.

The client is Python threads on the same machine, so on a small box it
competes with the server for CPU: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.cluster import ClusterError, LocalCluster, request

JSON_HEADERS = {"Content-Type": "application/json"}
POLL_INTERVAL = 0.010  # broadcast result polling, as a UI would (but faster)
OP_TIMEOUT = 10.0  # one request (or one broadcast round trip) at most


@dataclass(frozen=True)
class Endpoint:
    """A named operation; ``body`` gets a unique index so creates do not collide."""

    name: str
    method: str
    path: str
    body: Callable[[str], Any] | None = None
    broadcast: bool = False


ENDPOINTS = [
    Endpoint("health", "GET", "/unit_api/health"),
    Endpoint("version", "GET", "/unit_api/versions/app"),
    Endpoint("experiments_list", "GET", "/api/experiments"),
    Endpoint("experiment_get", "GET", "/api/experiments/bench"),
    Endpoint("workers_list", "GET", "/api/workers"),
    Endpoint("units", "GET", "/api/units"),
    Endpoint("assignment_count", "GET", "/api/experiments/assignment_count"),
    Endpoint("models", "GET", "/api/models"),
    Endpoint("broadcast_versions", "GET", "/api/units/$broadcast/versions/app", broadcast=True),
    # Last: it grows the experiments table, which would skew the reads above.
    Endpoint("experiment_create", "POST", "/api/experiments", body=lambda key: {"experiment": f"bench-{key}"}),
]


class OpError(Exception):
    """An operation that did not succeed; the message is the kind of error, for the report."""


@dataclass
class Result:
    endpoint: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)
    leader_rss_kb_after: int | None = None


class Client:
    """One keep-alive connection; reconnects after a failure so one error is one error."""

    def __init__(self, address: str) -> None:
        host, _, port = address.partition(":")
        self.host, self.port = host, int(port)
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=OP_TIMEOUT)
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers=JSON_HEADERS if data is not None else {})
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise OpError(type(e).__name__) from None
        if resp.will_close:
            self.close()
        return resp.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_op(client: Client, endpoint: Endpoint, key: str) -> None:
    """One request, or for a broadcast the request plus polling until its result is ready."""
    body = endpoint.body(key) if endpoint.body else None
    status, payload = client.call(endpoint.method, endpoint.path, body)
    if not endpoint.broadcast:
        if not 200 <= status < 300:
            raise OpError(f"HTTP {status}")
        return
    if status != 202:
        raise OpError(f"HTTP {status}")
    try:
        result_path = json.loads(payload)["result_url_path"]
    except (ValueError, KeyError, TypeError):
        raise OpError("no result_url_path") from None
    deadline = time.monotonic() + OP_TIMEOUT
    while True:
        status, _ = client.call("GET", result_path)
        if status == 200:
            return
        if not 200 <= status < 300:
            raise OpError(f"result HTTP {status}")
        if time.monotonic() > deadline:
            raise OpError("result timeout")
        time.sleep(POLL_INTERVAL)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no samples."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def measure(
    address: str, endpoint: Endpoint, concurrency: int, count: int, max_seconds: float, tag: str = ""
) -> Result:
    """``count`` operations over ``concurrency`` connections, stopping early at ``max_seconds``.

    ``tag`` keeps the keys of different runs apart, so creates never reuse a name.
    """
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.monotonic()
    deadline = start + max_seconds

    def worker() -> None:
        client = Client(address)
        mine: list[float] = []
        my_errors: dict[str, int] = {}
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= count:
                    break
                t0 = time.perf_counter()
                try:
                    run_op(client, endpoint, f"{tag or f'c{concurrency}'}-{i}")
                except OpError as e:
                    my_errors[str(e)] = my_errors.get(str(e), 0) + 1
                mine.append(time.perf_counter() - t0)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)
                for kind, n in my_errors.items():
                    errors[kind] = errors.get(kind, 0) + n

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + OP_TIMEOUT + 5)
    elapsed = time.monotonic() - start
    latencies.sort()
    done = len(latencies)
    return Result(
        endpoint=endpoint.name,
        concurrency=concurrency,
        requests=done,
        errors=sum(errors.values()),
        seconds=round(elapsed, 3),
        rps=round(done / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        max_ms=round((latencies[-1] if latencies else 0.0) * 1000, 2),
        error_kinds=errors,
    )


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon (the part that is the heap, not mapped files) from /proc."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def table(results: list[Result]) -> str:
    head = f"{'endpoint':<20} {'conc':>4} {'reqs':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(
            f"{r.endpoint:<20} {r.concurrency:>4} {r.requests:>6} {r.errors:>6} {r.rps:>8.1f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    return "\n".join(rows)


# The benchmark measures throughput, so the per-client rate limit of expensive
# routes (which would answer most of its requests 429) is lifted.
UNLIMITED = "\n[limits]\nexpensive_per_minute=100000000\nexpensive_burst=100000000\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="workers besides the leader (default 1)")
    parser.add_argument("--requests-c1", type=int, default=500, help="operations per endpoint at concurrency 1")
    parser.add_argument("--requests-c16", type=int, default=2000, help="operations per endpoint at concurrency 16")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="time limit of one measurement")
    parser.add_argument("--only", default="", help="comma-separated endpoint names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    endpoints = ENDPOINTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {e.name for e in ENDPOINTS}
        if unknown:
            parser.error(f"unknown endpoints {sorted(unknown)}; known: {[e.name for e in ENDPOINTS]}")
        endpoints = [e for e in ENDPOINTS if e.name in wanted]
    runs = [(1, args.requests_c1), (16, args.requests_c16)]

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pioreactor-bench-") as tmp:
        try:
            cluster = LocalCluster(Path(tmp), workers=args.workers, fresh=True, extra_config=UNLIMITED)
            cluster.start()
        except ClusterError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
        try:
            try:
                cluster.register_workers()
            except ClusterError as e:  # measure anyway: the failing endpoints will show as errors
                print(f"bench: warning: {e}", file=sys.stderr)
            status, body = request(cluster.leader.address, "POST", "/api/experiments", {"experiment": "bench"})
            if not 200 <= status < 300:
                print(f"bench: cannot create experiment 'bench': {status} {body}", file=sys.stderr)
            assert cluster.leader.process is not None
            pid = cluster.leader.process.pid
            address = cluster.leader.address
            for endpoint in endpoints:  # warm up code paths and connections, not measured
                measure(address, endpoint, 1, 10, 5.0, tag="warmup")
            mem_before = memory_kb(pid)
            print(f"leader pid {pid}, memory before load: {mem_before}", flush=True)
            print(table([]), flush=True)
            for endpoint in endpoints:
                for concurrency, count in runs:
                    result = measure(address, endpoint, concurrency, count, args.max_seconds)
                    result.leader_rss_kb_after = memory_kb(pid).get("VmRSS")
                    results.append(result)
                    print(table([result]).splitlines()[-1], flush=True)
            mem_after = memory_kb(pid)
        finally:
            cluster.stop()

    print()
    print(table(results))
    print()
    print(f"leader memory before load: RSS {mem_before.get('VmRSS')} kB, anon {mem_before.get('RssAnon')} kB")
    print(f"leader memory after load:  RSS {mem_after.get('VmRSS')} kB, anon {mem_after.get('RssAnon')} kB")
    failed = [r for r in results if r.errors]
    for r in failed:
        print(f"errors: {r.endpoint} c={r.concurrency}: {r.error_kinds}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "workers": args.workers,
                    "memory_kb": {"before": mem_before, "after": mem_after},
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
