"""Jobs on a real mosquitto: each job's own connection carries its will, so the broker says ``lost`` for it alone."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.jobs.manager import JobManager, RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.unit_state import PersistentCache, UnitState
from pioreactor_appliance.mqtt import MqttClient
from pioreactor_appliance.tap import mqtt_connector

from ..mosquitto import start_mosquitto
from ..test_mqtt import Inbox, settle, until
from .toys import Counter

STATE = "pioreactor/pio1/exp1/counter/$state"


class JobsOnBrokerTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        broker = await start_mosquitto(reactor, self)
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        state = UnitState(PersistentCache(data_dir / "cache.json", reactor))
        self.manager = JobManager(
            Registry({"counter": Counter}),
            reactor,
            "pio1",
            "leader",
            Config.defaults(),
            None,
            state,
            data_dir,
            mqtt_connector(reactor, Config.defaults(), broker.host, broker.port),
        )
        self.manager.startService()
        self.addCleanup(self.manager.stopService)
        self.watcher = MqttClient(reactor, broker.host, broker.port, "watcher")
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)
        self.inbox = Inbox()
        self.watcher.subscribe("pioreactor/pio1/exp1/counter/#", self.inbox, qos=2)
        await settle(self.watcher.when_connected())

    async def test_ready_settings_set_and_a_clean_stop(self) -> None:
        job = await self.manager.run(
            RunRequest("counter", "exp1", options={"interval": 60})
        )
        await self.inbox.wait_for(STATE, b"ready")
        await self.inbox.wait_for("pioreactor/pio1/exp1/counter/interval", b"60.0")
        await settle(
            self.watcher.publish(
                "pioreactor/pio1/exp1/counter/label/set", b"from the UI", qos=1
            )
        )
        await until(
            lambda: job.values.get("label") == "from the UI", "the /set to arrive"
        )
        await job.stop()
        await self.inbox.wait_for(STATE, b"disconnected")
        await self.inbox.wait_for("pioreactor/pio1/exp1/counter/label", b"")  # cleared

    async def test_a_dropped_connection_is_lost_then_ready_again(self) -> None:
        job = await self.manager.run(RunRequest("counter", "exp1"))
        await self.inbox.wait_for(STATE, b"ready")
        job.context.bus._abort_connection()  # no DISCONNECT: the broker fires the will
        await self.inbox.wait_for(STATE, b"lost")
        await until(
            lambda: self.inbox.payloads(STATE)[-1] == b"ready",
            "the job to say it is still here",
        )
        self.assertEqual(job.state, "ready")
