"""A whole Pioreactor cluster on loopback: one mosquitto and one ``twistd`` per unit.

Used by ``scripts/cluster`` (interactive) and ``bench/bench.py`` (load), so
both run the appliance the way a Pi does -- a real ``twistd pioreactor``
process per unit talking to a real broker -- only on 127.0.0.1 with free
ports instead of one Pi per hostname. This is a developer tool, not part of
the appliance: it uses blocking subprocess/http.client code on purpose.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from pioreactor_appliance.hardware.sim.calibrations import install_pump_calibrations

LOOPBACK = "127.0.0.1"
LEADER = "leader"


class ClusterError(Exception):
    """The cluster could not be started; the message says which part and shows its log."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on loopback, all distinct.

    The sockets are held open until all are chosen so the same port is not
    handed out twice; there is a small race with other programs after they
    close, which is acceptable for a dev tool.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind((LOOPBACK, 0))
            ports.append(s.getsockname()[1])
        return ports


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def find_mosquitto() -> str:
    """The broker binary: on PATH, or where Debian puts it (/usr/sbin is not on every PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    raise ClusterError(
        "mosquitto not found; run scripts/bootstrap (it installs it with apt-get)"
    )


def find_twistd() -> list[str]:
    """``twistd`` from the same environment as this Python, so it sees the same install."""
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("twistd")
    if found:
        return [found]
    raise ClusterError("twistd not found next to this Python; run scripts/bootstrap")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


def request(
    address: str, method: str, path: str, body: Any = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """One HTTP request on a fresh connection; returns (status, decoded JSON or text)."""
    host, _, port = address.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode("utf-8", "replace")


@dataclass
class Unit:
    """One appliance process and where it lives."""

    name: str
    role: str
    port: int
    pigpio_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    simulator: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass
class LocalCluster:
    """Start mosquitto and every unit, wait until all are healthy, stop them all.

    Each unit drives its own simulated Pioreactor (``hardware/sim``), a
    pigpiod look-alike in a process of its own, seeded by the unit's index;
    ``sim_speed`` makes cultures grow and vials heat faster than real time.

    Ports: with ``base_port`` P the leader listens on P, worker i on P+i,
    the broker on P+workers+1 and unit i's simulator on P+workers+2+i;
    without it every port is picked free.
    ``state_dir`` keeps each unit's data dir (config, database) and the logs;
    it survives restarts unless ``fresh`` is set. ``extra_config`` is added to
    the cluster's config.ini.
    """

    state_dir: Path
    workers: int = 2
    base_port: int | None = None
    fresh: bool = False
    extra_config: str = ""
    sim_speed: float = 1.0
    health_timeout: float = 30.0
    units: list[Unit] = field(default_factory=list, init=False)
    mqtt_port: int = field(default=0, init=False)
    _broker: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _logs: list[BinaryIO] = field(default_factory=list, init=False)

    # --- names and addresses ------------------------------------------------

    @property
    def leader(self) -> Unit:
        return self.units[0]

    @property
    def mqtt_address(self) -> str:
        return f"{LOOPBACK}:{self.mqtt_port}"

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise KeyError(name)

    # --- lifecycle ----------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bring everything up or, on any failure, tear down what did start and raise."""
        try:
            self._prepare()
            self._start_broker()
            for seed, unit in enumerate(self.units):
                self._start_simulator(unit, seed)
            for unit in self.units:
                self._start_unit(unit)
            for unit in self.units:
                self._wait_healthy(unit)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every unit (twistd stops its services in order), then the broker."""
        running = [
            u.process for u in self.units if u.process and u.process.poll() is None
        ]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            _wait_or_kill(proc, timeout)
        others = [
            p
            for p in [self._broker, *(u.simulator for u in self.units)]
            if p is not None and p.poll() is None
        ]
        for proc in others:
            proc.send_signal(signal.SIGTERM)
        for proc in others:
            _wait_or_kill(proc, timeout)
        for f in self._logs:
            f.close()
        self._logs.clear()

    def exited(self) -> list[Unit]:
        """Units whose process has ended (for a supervisor loop to notice crashes)."""
        return [
            u
            for u in self.units
            if u.process is not None and u.process.poll() is not None
        ]

    def register_workers(self) -> None:
        """Add every unit, leader included, to the leader's worker inventory."""
        for unit in self.units:
            status, body = request(
                self.leader.address,
                "PUT",
                "/api/workers",
                {"pioreactor_unit": unit.name},
            )
            if (
                status == 409 or 200 <= status < 300
            ):  # 409: kept from an earlier run of this state dir
                continue
            raise ClusterError(
                f"PUT /api/workers {unit.name} -> {status}: {body}\n"
                f"leader log {self.leader.log_path}:\n{log_tail(self.leader.log_path)}"
            )

    # --- steps --------------------------------------------------------------

    def _prepare(self) -> None:
        if self.fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        names = [LEADER] + [f"worker{i}" for i in range(1, self.workers + 1)]
        count = 2 * len(names) + 1
        if self.base_port is None:
            ports = free_ports(count)
        else:
            ports = [self.base_port + i for i in range(count)]
            taken = [p for p in ports if not port_is_free(p)]
            if taken:
                raise ClusterError(f"ports already in use on {LOOPBACK}: {taken}")
        unit_ports, self.mqtt_port, sim_ports = (
            ports[: len(names)],
            ports[len(names)],
            ports[len(names) + 1 :],
        )
        self.units = [
            Unit(
                name=name,
                role="leader" if name == LEADER else "worker",
                port=port,
                pigpio_port=sim_port,
                data_dir=self.state_dir / name,
                log_path=self.state_dir / f"{name}.log",
            )
            for name, port, sim_port in zip(names, unit_ports, sim_ports, strict=True)
        ]
        config = self._config_text()
        for unit in self.units:
            unit.data_dir.mkdir(parents=True, exist_ok=True)
            (unit.data_dir / "config.ini").write_text(config)
            unit_config = unit.data_dir / "unit_config.ini"
            if not unit_config.exists():
                unit_config.write_text(
                    f"# Settings for {unit.name} only; they override config.ini.\n"
                )
            install_pump_calibrations(unit.data_dir, unit.name)

    def _config_text(self) -> str:
        """The cluster-wide config.ini; every unit gets the same one, as on real Pis."""
        addresses = "".join(f"{u.name}={u.address}\n" for u in self.units)
        return (
            "# Written by tools/cluster.py on every start; edits are overwritten.\n"
            "[cluster.topology]\n"
            f"leader_hostname={LEADER}\n"
            f"leader_address={self.leader.address}\n"
            "\n[cluster.addresses]\n"
            f"{addresses}"
            "\n[ui]\nport=80\n"
            "\n[mqtt]\n"
            f"broker_address={LOOPBACK}\n"
            f"broker_port={self.mqtt_port}\n"
            # The units share this machine: system commands only say what they would have done.
            "\n[system]\npower_delay_seconds=1\n"
            "\n[system.commands]\n"
            "reboot=echo local cluster: reboot skipped\n"
            "shutdown=echo local cluster: shutdown skipped\n"
            "web_server_status=sh -c 'echo active' pioreactor.service\n"
            "web_server_restart=echo local cluster: restart skipped\n"
            "set_clock=echo local cluster: clock not set to\n"
            "update=echo local cluster: would pip install\n"
            f"{self.extra_config}"
        )

    def _open_log(self, path: Path) -> BinaryIO:
        f = path.open("ab")
        self._logs.append(f)
        return f

    def _start_broker(self) -> None:
        persistence = self.state_dir / "mosquitto"
        persistence.mkdir(exist_ok=True)
        conf = self.state_dir / "mosquitto.conf"
        # Run as ourselves: as root, mosquitto would otherwise drop to user
        # "mosquitto", which cannot write the persistence dir we created.
        user = pwd.getpwuid(os.getuid()).pw_name
        conf.write_text(
            f"listener {self.mqtt_port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            # The leader's ingest session must not stall or drop: see docs/architecture.md, "MQTT to SQLite".
            "max_inflight_messages 0\n"
            "max_queued_messages 200000\n"
            "persistence true\n"
            f"persistence_location {persistence}/\n"
            f"user {user}\n"
            "log_dest stdout\n"
        )
        log_path = self.state_dir / "mosquitto.log"
        self._broker = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._open_log(log_path),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop children in order
        )
        _wait_listening(self._broker, self.mqtt_port, "mosquitto", log_path)

    def _start_simulator(self, unit: Unit, seed: int) -> None:
        log_path = self.state_dir / f"{unit.name}-sim.log"
        cmd = [
            sys.executable, "-m", "pioreactor_appliance.hardware.sim",
            "--port", str(unit.pigpio_port), "--seed", str(seed), "--speed", str(self.sim_speed),
        ]  # fmt: skip
        unit.simulator = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._open_log(log_path),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_listening(
            unit.simulator,
            unit.pigpio_port,
            f"{unit.name}'s simulated Pioreactor",
            log_path,
        )

    def _start_unit(self, unit: Unit) -> None:
        cmd = [
            *find_twistd(),
            "-n",
            "--pidfile=",
            "--logfile=-",
            "pioreactor",
            "--role", unit.role,
            "--unit", unit.name,
            "--data-dir", str(unit.data_dir),
            "--listen", f"tcp:{unit.port}:interface={LOOPBACK}",
            "--mqtt", self.mqtt_address,
            "--pigpio", f"{LOOPBACK}:{unit.pigpio_port}",
        ]  # fmt: skip
        log = self._open_log(unit.log_path)
        log.write(
            f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode()
        )
        log.flush()
        unit.process = subprocess.Popen(
            cmd,
            cwd=unit.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def _wait_healthy(self, unit: Unit) -> None:
        assert unit.process is not None
        deadline = time.monotonic() + self.health_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if unit.process.poll() is not None:
                raise ClusterError(
                    f"{unit.name} exited with status {unit.process.returncode} before it was healthy; "
                    f"log {unit.log_path}:\n{log_tail(unit.log_path)}"
                )
            try:
                status, body = request(
                    unit.address, "GET", "/unit_api/health", timeout=1.0
                )
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise ClusterError(
            f"{unit.name} not healthy at {unit.url}/unit_api/health after {self.health_timeout:.0f} s "
            f"(last: {last}); log {unit.log_path}:\n{log_tail(unit.log_path)}"
        )


def _wait_listening(
    proc: subprocess.Popen[bytes],
    port: int,
    what: str,
    log_path: Path,
    timeout: float = 10.0,
) -> None:
    """Until ``proc`` accepts connections on ``port``; a ClusterError with its log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(
                f"{what} exited with {proc.returncode}:\n{log_tail(log_path)}"
            )
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ClusterError(
        f"{what} not listening on {LOOPBACK}:{port} after {timeout:g} s:\n{log_tail(log_path)}"
    )


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_cluster(
    state_dir: Path, workers: int = 1, register: bool = True
) -> Iterator[LocalCluster]:
    """A started cluster with every unit registered as a worker; stopped on exit."""
    with LocalCluster(state_dir, workers=workers, fresh=True) as cluster:
        if register:
            cluster.register_workers()
        yield cluster
