"""A leader and workers as real services on real loopback ports, with a real broker, for end-to-end tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.sim.calibrations import install_pump_calibrations
from pioreactor_appliance.hardware.sim.model import build_pioreactor
from pioreactor_appliance.hardware.sim.server import PigpioFactory
from pioreactor_appliance.tap import Settings, build_service

from .mdns_responder import unused_udp_address
from .mosquitto import free_port, start_mosquitto

# Fan-outs to units that are not running give up within a second.
QUICK_FANOUT = (
    "fanout_timeout_seconds=1.0\nfanout_post_timeout_seconds=1.0\n"
    "fanout_archive_timeout_seconds=1.0\nfanout_import_timeout_seconds=1.0\nworker_setup_step_seconds=1.0\n"
)
# Simulated units start real jobs, which can take over a second on a loaded 2-core machine (CI, parallel
# test processes): a 1 s fan-out then fails the run with task_timeout. Their units all run, so a longer
# limit costs nothing.
SIMULATED_FANOUT = "fanout_timeout_seconds=5.0\nfanout_post_timeout_seconds=10.0\nworker_setup_step_seconds=5.0\n"
# mDNS browses (GET /api/workers/discover) go to a loopback UDP port nobody answers, never to the
# machine's network, and end quickly; a test with its own [cluster.discovery] keeps it.
QUICK_DISCOVERY = "[cluster.discovery]\nmdns_address=127.0.0.1:{port}\nseconds=0.2\n"
# No per-client budget for expensive routes: tests that call many of them in a minute.
UNLIMITED = "[limits]\nexpensive_per_minute=1000000\nexpensive_burst=1000000\n"
# Never the Pi's reboot or update, or a real pip, on the machine running the tests: each command is a no-op.
HARMLESS_SYSTEM = (
    "[plugins]\npip=true\n"
    "[system]\npower_delay_seconds=0.1\n"
    "[system.commands]\nreboot=true\nshutdown=true\nweb_server_status=sh -c 'echo active' pioreactor.service\n"
    "web_server_restart=true\nset_clock=true\nupdate=true\n"
)


# Every request a test sends gives up well before the test's own timeout, so a request that hangs
# fails inside the test. A test stopped by trial's timeout is not stopped at all: its coroutine
# goes on after the cleanups and could start services that nothing stops.
REQUEST_TIMEOUT_SECONDS = 30.0


class BoundedHTTPClient(HTTPClient):
    """treq's client with a default timeout on every request."""

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_SECONDS)
        return super().request(method, url, **kwargs)


def route_index(path: Path) -> set[tuple[str, str]]:
    """A seed's (method, path) pairs, one ``METHOD /path`` a line: what a seed test must cover exactly."""
    pairs = set()
    for line in path.read_text().splitlines():
        method, route = line.split()
        pairs.add((method, route))
    return pairs


class ClusterTestCase(TestCase):
    """``await self.start_cluster([...])`` starts the leader and those workers, each registered as a worker.

    ``call`` sends ``self.headers`` with every request unless told otherwise. ``hit`` calls a route of
    ``hit_unit`` (or the unit given) and records it in ``self.hits``, for tests that must cover a seed's index.
    """

    timeout = 60
    headers: dict[bytes, list[bytes]] = {}
    hit_unit = "leader"

    async def start_cluster(
        self,
        workers: list[str],
        config: str = "",
        files: dict[str, str] | None = None,
        simulated: bool = False,
    ) -> None:
        """``config`` is added to every unit's config.ini, ``files`` (relative paths) written to every data directory.

        With ``simulated``, each unit drives its own simulated Pioreactor (in this process, on a
        loopback port, in real time) with pump calibrations that match it.
        """
        self.hits: set[tuple[str, str]] = set()
        self._ended = False
        self.addCleanup(setattr, self, "_ended", True)  # registered first, so it runs after every other cleanup
        self.broker = await start_mosquitto(reactor, self)
        self.ports = {unit: free_port() for unit in ["leader", *workers]}
        addresses = "".join(
            f"{unit}=127.0.0.1:{port}\n" for unit, port in self.ports.items()
        )
        self.services = {}
        self.data_dirs: dict[str, Path] = {}
        no_pigpiod = self._refusing_port()
        fanout = SIMULATED_FANOUT if simulated else QUICK_FANOUT
        if "[cluster.discovery]" not in config:
            config = f"{config}\n{QUICK_DISCOVERY.format(port=unused_udp_address(self)[1])}"
        for unit, port in self.ports.items():
            data_dir = Path(self.mktemp())
            data_dir.mkdir(parents=True)
            self.data_dirs[unit] = data_dir
            (data_dir / "config.ini").write_text(
                f"[cluster.topology]\nleader_hostname=leader\nleader_address=127.0.0.1:{self.ports['leader']}\n"
                f"[cluster.addresses]\n{addresses}{HARMLESS_SYSTEM}[appliance]\n{fanout}{config}"
            )
            for name, text in (files or {}).items():
                (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (data_dir / name).write_text(text)
            pigpio = ("127.0.0.1", no_pigpiod)
            if simulated:
                pigpio = ("127.0.0.1", await self._simulator(seed=len(self.services)))
                install_pump_calibrations(data_dir, unit)
            settings = Settings(
                role="leader" if unit == "leader" else "worker",
                unit=unit,
                data_dir=data_dir,
                listen=f"tcp:{port}:interface=127.0.0.1",
                mqtt=(self.broker.host, self.broker.port),
                pigpio=pigpio,
                config=Config.load(data_dir),
            )
            if self._ended:
                raise RuntimeError("the test has ended (trial timed it out); its cluster must not start now")
            service = build_service(settings, reactor)
            service.startService()
            self.addCleanup(service.stopService)
            self.services[unit] = service
        if simulated:
            await self._hardware_connected()
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = BoundedHTTPClient(Agent(reactor, pool=pool))
        for unit in self.ports:
            await self.call(
                "PUT",
                "leader",
                "/api/workers",
                json={"pioreactor_unit": unit},
                expect=201,
            )

    def _refusing_port(self) -> int:
        """A loopback port bound but not listening until the test ends: connecting to it is refused at once.

        Units without a simulator dial it rather than pigpiod's 8888, where the machine running the
        tests might have anything listening."""
        reserved = socket.socket()
        reserved.bind(("127.0.0.1", 0))
        self.addCleanup(reserved.close)
        return reserved.getsockname()[1]

    async def _hardware_connected(self) -> None:
        """Wait until every unit has reached its simulator: a job started before that fails (pigpiod unavailable)."""
        for _ in range(500):
            if all(service.getServiceNamed("hardware").connected for service in self.services.values()):
                return
            await deferLater(reactor, 0.02)
        self.fail("a unit never connected to its simulated Pioreactor")

    async def _simulator(self, seed: int) -> int:
        daemon, model = build_pioreactor(reactor, seed=seed)
        model.start()
        self.addCleanup(model.stop)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            PigpioFactory(daemon)
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def kill(self, unit: str) -> None:
        """Stop ``unit``'s service and drop the leader's kept-alive connections to it, as its death would
        (a stopped service only stops listening)."""
        await self.services[unit].stopService()
        await self.services["leader"].getServiceNamed("fanout")._pool.closeCachedConnections()

    async def add_silent_worker(self, unit: str) -> list[Protocol]:
        """Register ``unit`` as a worker whose address accepts connections and never answers a byte;
        the connections it holds (filled as they come)."""
        silent: list[Protocol] = []

        class Silent(Protocol):
            def connectionMade(self) -> None:
                silent.append(self)

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Silent))
        self.addCleanup(lambda: [p.transport.abortConnection() for p in silent if p.transport is not None])
        self.addCleanup(port.stopListening)
        fanout = self.services["leader"].getServiceNamed("fanout")
        fanout.addresses.remember(unit, f"127.0.0.1:{port.getHost().port}")
        await self.call("PUT", "leader", "/api/workers", json={"pioreactor_unit": unit}, expect=201)
        return silent

    def url(self, unit: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[unit]}{path}"

    async def call(
        self,
        method: str,
        unit: str,
        path: str,
        expect: int | None = None,
        **kwargs: Any,
    ) -> Any:
        kwargs.setdefault("headers", self.headers)
        response = await self.http.request(method, self.url(unit, path), **kwargs)
        body = await response.json()
        if expect is not None:
            self.assertEqual(response.code, expect, body)
        return body

    async def wait_for_result(
        self, accepted: dict[str, Any], unit: str = "leader"
    ) -> dict[str, Any]:
        """Poll the task on ``unit`` (the one that answered the 202) until it ends; its final body."""
        for _ in range(200):
            response = await self.http.get(
                self.url(unit, accepted["result_url_path"]), headers=self.headers
            )
            body = await response.json()
            if response.code == 200:
                return body
            self.assertEqual((response.code, body["status"]), (202, body["status"]))
            self.assertIn(body["status"], ("pending", "running"))
            await deferLater(reactor, 0.02)
        self.fail("the task never finished")

    async def hit(
        self,
        method: str,
        route: str,
        expect: int,
        unit: str | None = None,
        media: str = "application/json",
        **kwargs: Any,
    ) -> Any:
        """Call ``route`` (its ``{name}`` parts filled from ``params``), check the status and media type,
        and answer the JSON body (or the raw bytes for other media)."""
        params = kwargs.pop("params", {})
        self.hits.add((method, route))
        path = route.format(**{k: quote(v, safe="") for k, v in params.items()})
        kwargs.setdefault("headers", self.headers)
        response = await self.http.request(method, self.url(unit or self.hit_unit, path), **kwargs)
        content = await response.content()
        self.assertEqual(response.code, expect, (method, path, content[:600]))
        [content_type] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.decode().startswith(media), (method, path, content_type))
        self.last_headers = response.headers
        return json.loads(content) if media == "application/json" else content

    async def error(self, method: str, route: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        """A refused request: the reference's error JSON."""
        body = await self.hit(method, route, expect, **kwargs)
        self.assertEqual(body["status"], expect)
        self.assertIsInstance(body["error"], str)
        self.assertIsInstance(body["cause"], str)
        return body
