"""POST /api/workers/setup end to end: a real leader adding real (or fake, on loopback) workers step by step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from pioreactor_appliance import __version__, firstboot
from pioreactor_appliance.config import Config
from pioreactor_appliance.fanout import UnitAddresses
from pioreactor_appliance.store.workers import delete_worker

from ..cluster import ClusterTestCase

SETUP = "/api/workers/setup"


class FakeUnit(Resource):
    """A unit's health and version routes only, answering ``name`` and ``version``."""

    isLeaf = True

    def __init__(self, name: str, version: str) -> None:
        super().__init__()
        self.answers = {b"/unit_api/health": {"status": "ok", "pioreactor_unit": name}, b"/unit_api/versions/app": {"version": version}}

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.answers[request.path]).encode()


class WorkerSetupTests(ClusterTestCase):
    async def setUp(self) -> None:
        await self.start_cluster(["pio1"])
        self.leader_fanout = self.services["leader"].getServiceNamed("fanout")
        db = self.services["leader"].getServiceNamed("database")
        await db.run(delete_worker, "pio1")  # pio1 runs, but the leader does not know it yet

    def body(self, name: str = "pio1", **more: Any) -> dict[str, Any]:
        return {"name": name, "version": "1.1", "model": "pioreactor_40ml", **more}

    async def fake_unit(self, unit: str, said: str, version: str = __version__) -> None:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(FakeUnit(said, version)))
        self.addCleanup(port.stopListening)
        self.leader_fanout.addresses.remember(unit, f"127.0.0.1:{port.getHost().port}")

    async def failed(self, body: dict[str, Any], status: int, *mentions: str) -> dict[str, Any]:
        answer = await self.call("POST", "leader", SETUP, json=body, expect=status)
        for mention in mentions:
            self.assertIn(mention, answer["cause"])
        return answer

    async def registered(self) -> list[str]:
        return [w["pioreactor_unit"] for w in await self.call("GET", "leader", "/api/workers", expect=200)]

    async def test_bad_bodies_are_400s_naming_the_field(self) -> None:
        await self.failed(self.body("pio 1"), 400, "name:", "letters, digits")
        await self.failed(self.body("$broadcast"), 400, "name:")
        await self.failed(self.body(ipv4_address="pio1.local"), 400, "ipv4_address:", "not an IPv4 address")
        await self.failed(self.body(ipv4_address="300.1.1.1"), 400, "ipv4_address:")
        await self.failed({"name": "pio1", "version": "1.1"}, 400, "model")
        self.assertEqual(await self.registered(), ["leader"])

    async def test_added_at_its_configured_address(self) -> None:
        answer = await self.call("POST", "leader", SETUP, json=self.body(), expect=200)
        self.assertEqual(answer, {"msg": "Worker pio1 added successfully."})
        worker = await self.call("GET", "leader", "/api/workers/pio1", expect=200)
        self.assertEqual((worker["model_name"], worker["model_version"], worker["is_active"]), ("pioreactor_40ml", "1.1", 1))

    async def test_added_at_a_given_ipv4_which_the_leader_keeps(self) -> None:
        # Every unit serves on [ui] port; here the leader's is pio1's port, and pio1's config entry is gone.
        del self.leader_fanout.addresses.addresses["pio1"]
        self.leader_fanout.addresses.default_port = self.ports["pio1"]
        await self.call("POST", "leader", SETUP, json=self.body(ipv4_address="127.0.0.1"), expect=200)
        workers = await self.call("GET", "leader", "/api/workers", expect=200)
        self.assertEqual([(w["pioreactor_unit"], w["ipv4_address"]) for w in workers], [("leader", None), ("pio1", "127.0.0.1")])
        self.assertEqual(self.leader_fanout.addresses.address("pio1"), "127.0.0.1")
        # What a restart of the leader reads: config.ini keeps the address, the other entries untouched.
        restarted = UnitAddresses.from_config(Config.load(self.data_dirs["leader"]))
        self.assertEqual((restarted.address("pio1"), restarted.address("leader")), ("127.0.0.1", f"127.0.0.1:{self.ports['leader']}"))
        history = await self.call("GET", "leader", "/api/config/shared/history", expect=200)
        self.assertIn("pio1=127.0.0.1\n", history[0]["data"])

    async def test_an_unreachable_address_fails_the_reachable_step(self) -> None:
        self.leader_fanout.addresses.remember("pio9", f"127.0.0.1:{self._refusing_port()}")
        answer = await self.failed(self.body("pio9"), 404, "reachable: no answer from 127.0.0.1:")
        self.assertIn("could not be added", answer["error"])
        self.assertEqual(await self.registered(), ["leader"])

    async def test_a_unit_with_another_name_fails_the_reachable_step(self) -> None:
        await self.fake_unit("pio7", said="pio8")
        await self.failed(self.body("pio7"), 404, "reachable: the unit at 127.0.0.1:", "says it is pio8")
        self.assertEqual(await self.registered(), ["leader"])

    async def test_an_incompatible_version_fails_its_step(self) -> None:
        await self.fake_unit("pio7", said="pio7", version="1.0.0")
        answer = await self.failed(self.body("pio7"), 404, "version-compatible:", "pio7 runs 1.0.0", __version__)
        self.assertIn("Update the worker", answer["remediation"])
        await self.fake_unit("pio6", said="pio6", version=".".join(__version__.split(".")[:2]) + ".99")
        await self.call("POST", "leader", SETUP, json=self.body("pio6"), expect=200)
        self.assertEqual(await self.registered(), ["leader", "pio6"])

    async def test_one_setup_at_a_time(self) -> None:
        held = await self.add_silent_worker("pio5")  # accepts and never answers: the first setup waits out its step
        first: Deferred[Any] = Deferred.fromCoroutine(self.failed(self.body("pio5"), 404, "reachable:", "did not answer within 1 s"))
        for _ in range(100):
            if held:
                break
            await deferLater(reactor, 0.005)
        self.assertTrue(held, "the first setup never reached the silent worker")
        answer = await self.failed(self.body(), 409, "One worker setup runs at a time")
        self.assertIn("Try again when it ends", answer["remediation"])
        await first
        await self.call("POST", "leader", SETUP, json=self.body(), expect=200)

    async def test_a_flashed_worker_joins_its_leader_by_itself(self) -> None:
        """What pioreactor-register.service runs on a worker after first boot, against a real leader."""
        del self.leader_fanout.addresses.addresses["pio1"]
        self.leader_fanout.addresses.default_port = self.ports["pio1"]  # the leader finds pio1 at the address it gives
        root = Path(self.mktemp())
        (root / firstboot.REGISTER_PENDING).parent.mkdir(parents=True)
        (root / firstboot.REGISTER_PENDING).write_text("")
        (root / "etc/pioreactor").mkdir(parents=True)
        (root / "etc/pioreactor/appliance.env").write_text("PIOREACTOR_ROLE=worker\nPIOREACTOR_UNIT=pio1\n")
        (root / firstboot.DATA_DIR).mkdir(parents=True)
        (root / firstboot.DATA_DIR / "config.ini").write_text(
            f"[cluster.topology]\nleader_hostname=leader\nleader_address=127.0.0.1:{self.ports['leader']}\n"
            "[hardware]\nmodel=pioreactor_20ml\nmodel_version=1.0\n"
        )
        joined = await deferToThread(firstboot.register, root, firstboot.unit_of(root), sleep=lambda _: None)
        self.assertTrue(joined)
        self.assertFalse((root / firstboot.REGISTER_PENDING).exists())
        worker = await self.call("GET", "leader", "/api/workers/pio1", expect=200)
        self.assertEqual((worker["model_name"], worker["model_version"]), ("pioreactor_20ml", "1.0"))
        self.assertEqual(self.leader_fanout.addresses.address("pio1"), "127.0.0.1")
