"""systemd/: install.sh into a temporary root, the units verified by systemd-analyze,
the sudoers file by visudo, and the broker configuration run by a real mosquitto."""

from __future__ import annotations

import base64
import getpass
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.mosquitto import find_mosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
UNITS = ["pioreactor.service", "pioreactor-firstboot.service", "pioreactor-register.service", "pigpiod.service", "pioreactor-simulator.service"]
# The programs the units (and mosquitto.service, for its drop-in) start: stubs in the verified tree.
PROGRAMS = ["opt/pioreactor/venv/bin/python", "opt/pioreactor/venv/bin/twistd", "usr/bin/pigpiod", "usr/sbin/mosquitto", "bin/mkdir", "bin/kill"]
TIMEOUT = 5.0


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise AssertionError(f"{name} is not installed: run scripts/bootstrap, or apt-get install {package}")
    return found


def install(testcase: SynchronousTestCase) -> Path:
    root = Path(testcase.mktemp()).absolute()
    root.mkdir()
    subprocess.run(["sh", str(INSTALL), "--files-only", str(root)], check=True, capture_output=True)
    return root


class InstallTests(SynchronousTestCase):
    def test_files_modes_and_links(self) -> None:
        root = install(self)
        expected = {
            **{f"etc/systemd/system/{unit}": 0o644 for unit in UNITS},
            "etc/systemd/system/mosquitto.service.d/pioreactor.conf": 0o644,
            "etc/mosquitto/conf.d/pioreactor.conf": 0o644,
            "etc/mosquitto/pioreactor.acl": 0o644,
            "etc/sudoers.d/pioreactor": 0o440,
            "etc/sudoers.d/lab": 0o440,
            "etc/tmpfiles.d/pioreactor.conf": 0o644,
            "usr/share/pioreactor/avahi/pioreactor-http.service": 0o644,
            "usr/share/pioreactor/avahi/pioreactor-pio-worker.service": 0o644,
            "usr/share/pioreactor/avahi/pioreactor-mqtt.service": 0o644,
        }
        for relative, mode in expected.items():
            self.assertEqual((root / relative).stat().st_mode & 0o7777, mode, relative)
        links = {str(p.relative_to(root)): os.readlink(p) for p in root.glob("etc/systemd/system/*.wants/*")}
        self.assertEqual(
            links,
            {
                "etc/systemd/system/sysinit.target.wants/pioreactor-firstboot.service": "/etc/systemd/system/pioreactor-firstboot.service",
                **{f"etc/systemd/system/multi-user.target.wants/{u}": f"/etc/systemd/system/{u}" for u in UNITS if u != "pioreactor-firstboot.service"},
            },
        )
        # Idempotent: a second run changes nothing and does not fail.
        subprocess.run(["sh", str(INSTALL), "--files-only", str(root)], check=True, capture_output=True)

    def test_usage(self) -> None:
        done = subprocess.run(["sh", str(INSTALL)], check=False, capture_output=True, text=True)
        self.assertEqual(done.returncode, 2)
        self.assertIn("usage:", done.stderr)

    def test_sudoers_is_valid_and_only_the_whitelist(self) -> None:
        visudo = tool("visudo", "sudo")
        sudoers = REPO / "systemd/sudoers.d/pioreactor"
        done = subprocess.run([visudo, "-cf", str(sudoers)], check=False, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        rules = [line for line in sudoers.read_text().splitlines() if line and not line.startswith("#")]
        self.assertEqual(rules[-1], "pioreactor ALL=(root) NOPASSWD: PIOREACTOR_POWER, PIOREACTOR_RESTART, PIOREACTOR_CLOCK")
        lab = REPO / "systemd/sudoers.d/lab"
        done = subprocess.run([visudo, "-cf", str(lab)], check=False, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        broken = Path(self.mktemp())
        broken.write_text("pioreactor ALL=(root) NOPASSWD: date *\n")  # visudo refuses a relative command
        self.assertNotEqual(subprocess.run([visudo, "-cf", str(broken)], check=False, capture_output=True).returncode, 0)


class VerifyTests(SynchronousTestCase):
    def test_units_verify(self) -> None:
        """systemd-analyze verify --root on the installed tree, with the host's own units and stub programs."""
        analyze = tool("systemd-analyze", "systemd")
        root = install(self)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        for relative in PROGRAMS:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text("#!/bin/sh\n")
            (root / relative).chmod(0o755)
        if not (root / "usr/lib/systemd/system/mosquitto.service").exists():
            raise AssertionError("mosquitto.service is not installed: run scripts/bootstrap, or apt-get install mosquitto")
        units = [str(root / "etc/systemd/system" / unit) for unit in UNITS] + ["mosquitto.service"]
        done = subprocess.run([analyze, "verify", f"--root={root}", *units], check=False, capture_output=True, text=True, cwd=root)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))

    def test_verify_catches_a_bad_unit(self) -> None:
        """The check above can fail: a misspelt key in the mosquitto drop-in is reported."""
        analyze = tool("systemd-analyze", "systemd")
        root = install(self)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        dropin = root / "etc/systemd/system/mosquitto.service.d/pioreactor.conf"
        dropin.write_text(dropin.read_text() + "ConditionPathExist=/x\n")
        done = subprocess.run([analyze, "verify", f"--root={root}", "mosquitto.service"], check=False, capture_output=True, text=True, cwd=root)
        self.assertIn("Unknown key 'ConditionPathExist'", done.stderr)


class MqttWire:
    """A minimal blocking MQTT 3.1.1 client over a socket, optionally inside WebSocket frames."""

    def __init__(self, port: int, websocket: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.websocket = websocket
        self.buffer = b""
        self.pending: list[tuple[int, bytes]] = []  # packets read while waiting for another
        if websocket:
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall(
                f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n".encode()
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += self.recv()
            head, _, self.raw = response.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise AssertionError(f"no WebSocket upgrade: {head!r}")
        else:
            self.raw = b""
        name = os.urandom(4).hex().encode()
        self.send(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(name)) + name)
        kind, body = self.packet()
        if (kind, body) != (0x20, b"\x00\x00"):
            raise AssertionError(f"not connected: {kind:#x} {body!r}")

    def recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("the broker closed the connection")
        return data

    def send(self, header: int, body: bytes) -> None:
        length, encoded = len(body), b""
        while True:
            byte, length = length % 128, length // 128
            encoded += bytes([byte | (0x80 if length else 0)])
            if not length:
                break
        packet = bytes([header]) + encoded + body
        if self.websocket:  # one masked binary frame (every packet here is < 126 bytes)
            mask = os.urandom(4)
            packet = bytes([0x82, 0x80 | len(packet)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(packet))
        self.sock.sendall(packet)

    def fill(self) -> None:
        """Move at least one more byte of MQTT into the buffer."""
        if not self.websocket:
            self.buffer += self.recv()
            return
        while True:  # unmasked frames from the server
            if len(self.raw) >= 2:
                length, offset = self.raw[1] & 0x7F, 2
                if length == 126 and len(self.raw) >= 4:
                    length, offset = struct.unpack("!H", self.raw[2:4])[0], 4
                if length != 126 and len(self.raw) >= offset + length:
                    self.buffer += self.raw[offset : offset + length]
                    self.raw = self.raw[offset + length :]
                    return
            self.raw += self.recv()

    def packet(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                length, multiplier, index = 0, 1, 1
                while index < len(self.buffer):
                    length += (self.buffer[index] & 0x7F) * multiplier
                    multiplier *= 128
                    if not self.buffer[index] & 0x80:
                        break
                    index += 1
                else:
                    index = -1
                if index > 0 and len(self.buffer) >= index + 1 + length:
                    kind, body = self.buffer[0] & 0xF0, self.buffer[index + 1 : index + 1 + length]
                    self.buffer = self.buffer[index + 1 + length :]
                    return kind, body
            self.fill()

    def subscribe(self, topic: str) -> None:
        self.send(0x82, b"\x00\x01" + struct.pack("!H", len(topic)) + topic.encode() + b"\x00")
        kind, body = self.packet()
        if kind != 0x90 or body[-1] == 0x80:
            raise AssertionError(f"subscription refused: {kind:#x} {body!r}")

    def publish(self, topic: str, payload: bytes) -> None:
        self.send(0x30, struct.pack("!H", len(topic)) + topic.encode() + payload)
        self.send(0xC0, b"")  # PINGREQ: its answer means the broker has handled the publish
        while (packet := self.packet())[0] != 0xD0:
            self.pending.append(packet)

    def message(self) -> tuple[str, bytes]:
        kind, body = self.pending.pop(0) if self.pending else self.packet()
        if kind != 0x30:
            raise AssertionError(f"expected a message, got {kind:#x}")
        size = struct.unpack("!H", body[:2])[0]
        return body[2 : 2 + size].decode(), body[2 + size :]

    def close(self) -> None:
        self.sock.close()


class MosquittoTests(SynchronousTestCase):
    def setUp(self) -> None:
        """The installed pioreactor.conf, its listeners moved to free loopback ports, run by a real mosquitto."""
        root = install(self)
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        self.cluster, self.browsers = free_port(), free_port()
        text = (root / "etc/mosquitto/conf.d/pioreactor.conf").read_text()
        for old, new in (
            ("listener 1883\n", f"listener {self.cluster} 127.0.0.1\n"),
            ("listener 9001\n", f"listener {self.browsers} 127.0.0.1\n"),
            ("acl_file /etc/mosquitto/pioreactor.acl\n", f"acl_file {root}/etc/mosquitto/pioreactor.acl\n"),
        ):
            self.assertEqual(text.count(old), 1, old)
            text = text.replace(old, new)
        # What Debian's /etc/mosquitto/mosquitto.conf adds, pointed at this test's directory.
        text += f"persistence_location {directory}/\nuser {getpass.getuser()}\nlog_dest stderr\n"
        (directory / "mosquitto.conf").write_text(text)
        self.log = open(directory / "mosquitto.log", "wb")  # noqa: SIM115 (closed in cleanup)
        self.addCleanup(self.log.close)
        process = subprocess.Popen([find_mosquitto(), "-c", str(directory / "mosquitto.conf")], stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(process.wait)
        self.addCleanup(process.terminate)
        deadline = time.monotonic() + TIMEOUT
        for port in (self.cluster, self.browsers):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"mosquitto did not start:\n{(directory / 'mosquitto.log').read_text()}") from None
                    time.sleep(0.02)

    def client(self, port: int, websocket: bool = False) -> MqttWire:
        client = MqttWire(port, websocket)
        self.addCleanup(client.close)
        return client

    def test_cluster_listener_takes_anonymous_publishers(self) -> None:
        subscriber, publisher = self.client(self.cluster), self.client(self.cluster)
        subscriber.subscribe("pioreactor/#")
        publisher.publish("pioreactor/unit1/exp/od_reading/od", b"0.5")
        self.assertEqual(subscriber.message(), ("pioreactor/unit1/exp/od_reading/od", b"0.5"))

    def test_websockets_listener_is_read_only(self) -> None:
        cluster, browser = self.client(self.cluster), self.client(self.browsers, websocket=True)
        cluster.subscribe("pioreactor/#")
        browser.subscribe("pioreactor/#")
        browser.publish("pioreactor/unit1/exp/stirring/$state/set", b"disconnected")
        cluster.publish("pioreactor/unit1/exp/od_reading/od", b"0.5")
        # The browser's message was dropped: the first each side gets is the cluster's.
        self.assertEqual(cluster.message(), ("pioreactor/unit1/exp/od_reading/od", b"0.5"))
        self.assertEqual(browser.message(), ("pioreactor/unit1/exp/od_reading/od", b"0.5"))
