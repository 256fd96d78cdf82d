"""The real ``twistd pioreactor`` process: it starts, serves, and on SIGTERM says goodbye and closes cleanly."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pioreactor_appliance.mqtt import MqttClient

from .mosquitto import free_port, start_mosquitto


class Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Failure] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason)


class LifecycleTests(TestCase):
    timeout = 60

    async def test_leader_starts_serves_and_stops_on_sigterm(self) -> None:
        broker = await start_mosquitto(reactor, self)
        seen: list[bytes] = []
        watcher = MqttClient(reactor, broker.host, broker.port, "lifecycle-watcher")
        watcher.subscribe("pioreactor/boss/$experiment/monitor/$state", lambda m: seen.append(m.payload), qos=1)
        watcher.startService()
        self.addCleanup(watcher.stopService)

        data_dir = Path(self.mktemp()).absolute()
        data_dir.mkdir(parents=True)
        (data_dir / "config.ini").write_text("[cluster.topology]\nleader_hostname=boss\nleader_address=127.0.0.1\n")
        port = free_port()
        args = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-",
            "pioreactor", "--unit", "boss", "--data-dir", str(data_dir),
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--mqtt", f"{broker.host}:{broker.port}",
        ]
        process = Collect()
        transport = reactor.spawnProcess(process, sys.executable, args, env=dict(os.environ))

        async def health() -> Any:
            for _ in range(250):
                try:
                    response = await treq.get(f"http://127.0.0.1:{port}/unit_api/health", persistent=False)
                    return await response.json()
                except Exception:
                    if process.ended.called:
                        self.fail(process.output.decode())
                    await deferLater(reactor, 0.02)
            self.fail("the appliance did not answer: " + process.output.decode())

        self.assertEqual((await health())["pioreactor_unit"], "boss")
        response = await treq.post(f"http://127.0.0.1:{port}/api/experiments", json={"experiment": "kept"}, persistent=False)
        self.assertEqual(response.code, 201, await response.text())
        for _ in range(100):
            if seen[-1:] == [b"ready"]:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(seen[-1:], [b"ready"])

        transport.signalProcess("TERM")
        reason = (await process.ended.addBoth(lambda r: [r]))[0]
        # twistd re-raises the signal it stopped on, so a clean SIGTERM exit reads "ended by signal 15".
        self.assertTrue(reason.check(ProcessDone, ProcessTerminated), process.output.decode())
        self.assertIn(reason.value.signal if reason.check(ProcessTerminated) else None, (None, signal.SIGTERM))
        self.assertIn(b"Server Shut Down.", process.output)
        for _ in range(100):
            if seen[-1:] == [b"disconnected"]:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(seen[-1:], [b"disconnected"], "the clean stop publishes disconnected, not the will's lost")
        database = data_dir / "storage" / "pioreactor.sqlite"
        self.assertTrue(database.exists())
        self.assertFalse(Path(f"{database}-wal").exists(), "a closed database leaves no WAL behind")
        self.assertNotIn(b"Traceback", process.output, process.output.decode())
