"""End to end on loopback: a real broker, a leader and a worker as real services on real sockets."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pioreactor_appliance import __version__
from pioreactor_appliance.config import Config
from pioreactor_appliance.tap import Settings, build_service

from .mosquitto import start_mosquitto


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterTests(TestCase):
    timeout = 60

    async def start_cluster(self, workers: list[str]) -> None:
        self.broker = await start_mosquitto(reactor, self)
        self.ports = {unit: free_port() for unit in ["leader", *workers]}
        addresses = "".join(f"{unit}=127.0.0.1:{port}\n" for unit, port in self.ports.items())
        self.services = {}
        for unit, port in self.ports.items():
            data_dir = Path(self.mktemp())
            data_dir.mkdir(parents=True)
            (data_dir / "config.ini").write_text(
                f"[cluster.topology]\nleader_hostname=leader\nleader_address=127.0.0.1:{self.ports['leader']}\n"
                f"[cluster.addresses]\n{addresses}[appliance]\nfanout_timeout_seconds=1.0\n"
            )
            settings = Settings(
                role="leader" if unit == "leader" else "worker",
                unit=unit,
                data_dir=data_dir,
                listen=f"tcp:{port}:interface=127.0.0.1",
                mqtt=(self.broker.host, self.broker.port),
                pigpio=("127.0.0.1", 8888),
                config=Config.load(data_dir),
            )
            service = build_service(settings, reactor)
            service.startService()
            self.addCleanup(service.stopService)
            self.services[unit] = service
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        for unit in self.ports:
            await self.call("PUT", "leader", "/api/workers", json={"pioreactor_unit": unit}, expect=201)

    async def call(self, method: str, unit: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        response = await self.http.request(method, f"http://127.0.0.1:{self.ports[unit]}{path}", **kwargs)
        body = await response.json()
        if expect is not None:
            self.assertEqual(response.code, expect, body)
        return body

    async def wait_for_result(self, accepted: dict[str, Any]) -> dict[str, Any]:
        for _ in range(200):
            response = await self.http.get(f"http://127.0.0.1:{self.ports['leader']}{accepted['result_url_path']}")
            body = await response.json()
            if response.code == 200:
                return body
            self.assertEqual((response.code, body["status"]), (202, body["status"]))
            self.assertIn(body["status"], ("pending", "running"))
            await deferLater(reactor, 0.02)
        self.fail("the task never finished")

    async def test_broadcast_version_reaches_every_unit(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        accepted = await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202)
        self.assertEqual((accepted["unit"], accepted["status"]), ("leader", "pending"))
        body = await self.wait_for_result(accepted)
        self.assertEqual(body["status"], "succeeded")
        self.assertEqual(
            body["result"],
            {unit: {"ok": True, "unit": unit, "value": {"version": __version__}} for unit in ("leader", "pio1", "pio2")},
        )

    async def test_one_unit_and_bad_unit(self) -> None:
        await self.start_cluster(["pio1"])
        body = await self.wait_for_result(await self.call("GET", "leader", "/api/units/pio1/versions/app", expect=202))
        self.assertEqual(list(body["result"]), ["pio1"])
        error = await self.call("GET", "leader", "/api/units/nobody/versions/app", expect=400)
        self.assertEqual(error["error"], "Unknown Pioreactor unit: nobody")

    async def test_dead_unit_is_its_own_failed_envelope(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        await self.services["pio2"].stopService()
        body = await self.wait_for_result(await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202))
        self.assertEqual(body["status"], "succeeded")
        self.assertTrue(body["result"]["leader"]["ok"])
        self.assertTrue(body["result"]["pio1"]["ok"])
        dead = body["result"]["pio2"]
        self.assertEqual((dead["ok"], dead["error"]["kind"], dead["retryable"]), (False, "connection_error", True))

    async def test_worker_refers_api_callers_to_the_leader(self) -> None:
        await self.start_cluster(["pio1"])
        error = await self.call("GET", "pio1", "/api/experiments", expect=404)
        self.assertIn("/unit_api", error["remediation"])
        self.assertIn("leader", error["remediation"])
        health = await self.call("GET", "pio1", "/unit_api/health", expect=200)
        self.assertEqual(health["pioreactor_unit"], "pio1")
