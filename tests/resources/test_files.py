"""``/unit_api/system/path`` and ``/unit_api/system/remove_file``: confined to the data directory."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.files import FilesApi, confine
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.policy import AppliancePolicy
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import _settle, request

MAX_BYTES = 1000


class FilesTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "plugins" / "__pycache__").mkdir(parents=True)
        (self.root / "plugins" / "ui").mkdir()
        (self.root / "plugins" / "my_plugin.py").write_text("print('hi')\n")
        (self.root / "storage").mkdir()
        (self.root / "config.ini").write_text("[x]\na=1\n")
        (self.root / "credentials.json").write_text('{"users": []}')
        (self.root / "cluster_secret").write_text("s3cret")
        self.clock = Clock()
        self.tasks = TaskRegistry(self.clock, "pio1", max_count=10, max_age=60)
        policy = AppliancePolicy(
            self.clock, Limits.defaults(), HostCheck.of(["leader"], [])
        )
        self.stub = StubTreq(
            Router([FilesApi(self.root, self.tasks, MAX_BYTES)], policy=policy)
        )

    async def get(self, path: str) -> tuple[int, Any, bytes]:
        """Code, content type and raw body of a GET."""
        what = f"GET {path}"
        response = await _settle(
            self.stub, self.stub.request("GET", "http://leader" + path), what
        )
        body = await _settle(self.stub, response.content(), what)
        return (
            response.code,
            response.headers.getRawHeaders(b"content-type", [b""])[0],
            body,
        )

    async def refused(self, path: str, status: int, mention: str) -> None:
        code, kind, body = await self.get(path)
        self.assertEqual((code, kind), (status, b"application/json"), body)
        error = json.loads(body)
        self.assertIn(mention, f"{error['error']} {error['cause']}")
        self.assertNotIn(b"s3cret", body)
        self.assertNotIn(b"root:", body)

    async def remove(self, filepath: Any) -> tuple[int, Any]:
        return await request(
            self.stub,
            "POST",
            "/unit_api/system/remove_file",
            json={"filepath": filepath},
        )

    async def test_the_data_directory_is_listed_one_level_deep(self) -> None:
        code, kind, body = await self.get("/unit_api/system/path/")
        self.assertEqual((code, kind), (200, b"application/json"))
        listing = json.loads(body)
        self.assertEqual(listing["current"], str(self.root.resolve()))
        self.assertEqual(listing["dirs"], ["plugins", "storage"])
        self.assertEqual(
            listing["files"], ["cluster_secret", "config.ini", "credentials.json"]
        )

    async def test_without_the_slash_it_answers_the_same(self) -> None:
        self.assertEqual(
            await self.get("/unit_api/system/path"),
            await self.get("/unit_api/system/path/"),
        )

    async def test_a_subdirectory_hides_pycache(self) -> None:
        code, _, body = await self.get("/unit_api/system/path/plugins")
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body),
            {
                "current": str((self.root / "plugins").resolve()),
                "dirs": ["ui"],
                "files": ["my_plugin.py"],
            },
        )

    async def test_a_file_is_sent_as_text(self) -> None:
        code, kind, body = await self.get("/unit_api/system/path/plugins/my_plugin.py")
        self.assertEqual((code, kind, body), (200, b"text/plain", b"print('hi')\n"))

    async def test_a_missing_path_is_404(self) -> None:
        await self.refused(
            "/unit_api/system/path/plugins/nope.py", 404, "Path not found"
        )

    async def test_dot_dot_is_refused_however_spelled(self) -> None:
        for path in (
            "/unit_api/system/path/plugins/../../etc/passwd",
            "/unit_api/system/path/%2e%2e/%2e%2e/etc/passwd",
            "/unit_api/system/path/plugins%2F..%2F..%2Fetc%2Fpasswd",
            "/unit_api/system/path/plugins/%2E%2E",
        ):
            code, _, body = await self.get(path)
            self.assertIn(code, (403, 404), path)
            self.assertNotIn(b"root:", body)

    async def test_dot_dot_inside_a_segment_is_refused_by_name(self) -> None:
        await self.refused(
            "/unit_api/system/path/plugins%2F..%2Fconfig.ini", 403, "'..'"
        )

    async def test_an_absolute_path_is_refused(self) -> None:
        # In a URL it makes "//", which the router refuses before any handler; in a body it is confined.
        await self.refused(
            "/unit_api/system/path/%2Fetc%2Fpasswd", 404, "No route matches"
        )
        await self.refused("/unit_api/system/path//etc/passwd", 404, "No route matches")
        with self.assertRaises(ApiError) as raised:
            confine(self.root, "/etc/passwd")
        self.assertEqual(
            (raised.exception.status, raised.exception.error),
            (403, "Access to this path is not allowed"),
        )
        self.assertEqual(
            confine(self.root, str(self.root / "config.ini")),
            (self.root / "config.ini").resolve(),
        )

    async def test_a_symlink_out_of_the_data_directory_is_refused_and_not_listed(
        self,
    ) -> None:
        os.symlink("/etc", self.root / "etc")
        await self.refused(
            "/unit_api/system/path/etc", 403, "outside the data directory"
        )
        await self.refused(
            "/unit_api/system/path/etc/passwd", 403, "outside the data directory"
        )
        _, _, body = await self.get("/unit_api/system/path/")
        self.assertNotIn("etc", json.loads(body)["dirs"] + json.loads(body)["files"])

    async def test_a_symlink_inside_is_followed(self) -> None:
        os.symlink(self.root / "plugins" / "my_plugin.py", self.root / "link.py")
        code, _, body = await self.get("/unit_api/system/path/link.py")
        self.assertEqual((code, body), (200, b"print('hi')\n"))

    async def test_secrets_are_never_served(self) -> None:
        await self.refused("/unit_api/system/path/credentials.json", 403, "protected")
        await self.refused("/unit_api/system/path/cluster_secret", 403, "protected")
        os.symlink(self.root / "cluster_secret", self.root / "innocent.txt")
        await self.refused("/unit_api/system/path/innocent.txt", 403, "protected")

    async def test_databases_are_never_served_by_name_or_content(self) -> None:
        for name in (
            "storage/pioreactor.sqlite",
            "storage/pioreactor.sqlite-wal",
            "storage/x.sqlite.backup",
        ):
            (self.root / name).write_bytes(b"data")
            await self.refused(f"/unit_api/system/path/{name}", 403, "protected")
        conn = sqlite3.connect(self.root / "storage" / "renamed.db")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        await self.refused("/unit_api/system/path/storage/renamed.db", 403, "protected")

    async def test_a_large_file_is_413(self) -> None:
        (self.root / "big.log").write_bytes(b"x" * (MAX_BYTES + 1))
        await self.refused(
            "/unit_api/system/path/big.log", 413, "larger than 1000 bytes"
        )
        (self.root / "fits.log").write_bytes(b"x" * MAX_BYTES)
        self.assertEqual((await self.get("/unit_api/system/path/fits.log"))[0], 200)

    async def test_a_fifo_is_not_read(self) -> None:
        os.mkfifo(self.root / "pipe")
        await self.refused("/unit_api/system/path/pipe", 403, "not a regular file")

    async def test_the_kill_switch_closes_the_file_system(self) -> None:
        (self.root / "DISALLOW_UI_FILE_SYSTEM").touch()
        await self.refused("/unit_api/system/path/", 403, "DISALLOW_UI_FILE_SYSTEM")
        code, body = await self.remove("config.ini")
        self.assertEqual(code, 403, body)
        self.assertTrue((self.root / "config.ini").exists())

    async def test_remove_a_file_relative_or_absolute(self) -> None:
        (self.root / "plugins" / "old.py").write_text("")
        code, accepted = await self.remove("plugins/my_plugin.py")
        self.assertEqual(code, 202, accepted)
        code, accepted2 = await self.remove(
            str(self.root.resolve() / "plugins" / "old.py")
        )
        self.assertEqual(code, 202, accepted2)
        for body in (accepted, accepted2):
            task = self.tasks.get(body["task_id"])
            self.clock.advance(0)
            await task.deferred
            self.assertEqual(task.body()["result"], True)
        self.assertFalse((self.root / "plugins" / "my_plugin.py").exists())
        self.assertFalse((self.root / "plugins" / "old.py").exists())

    async def test_remove_refuses_what_it_must(self) -> None:
        outside = Path(self.mktemp()).absolute()
        outside.write_text("keep")
        os.symlink(outside, self.root / "out.txt")
        (self.root / "storage" / "pioreactor.sqlite").write_bytes(b"db")
        cases = [
            ("../" + outside.name, 403, "'..'"),
            (
                "%2e%2e/x",
                404,
                "Path not found",
            ),  # a body is not URL-decoded: a literal name, which is absent
            (str(outside), 403, "outside the data directory"),
            ("out.txt", 403, "outside the data directory"),
            ("credentials.json", 403, "protected"),
            ("cluster_secret", 403, "protected"),
            ("storage/pioreactor.sqlite", 403, "protected"),
            ("plugins", 400, "directory"),
            ("", 400, "directory"),
            ("plugins/nope.py", 404, "Path not found"),
            ("a\x00b", 400, "NUL"),
        ]
        for filepath, status, mention in cases:
            code, body = await self.remove(filepath)
            self.assertEqual(code, status, (filepath, body))
            self.assertIn(mention, f"{body['error']} {body['cause']}", filepath)
        self.assertEqual(outside.read_text(), "keep")
        self.assertTrue((self.root / "credentials.json").exists())
        self.assertTrue((self.root / "storage" / "pioreactor.sqlite").exists())
        self.assertEqual(len(self.tasks._tasks), 0)

    async def test_remove_bad_bodies(self) -> None:
        for body in ({}, {"filepath": 3}, {"filepath": "x", "extra": 1}, []):
            code, answer = await request(
                self.stub, "POST", "/unit_api/system/remove_file", json=body
            )
            self.assertEqual(
                (code, answer["error"]), (400, "Invalid request body."), body
            )
        code, _ = await request(
            self.stub,
            "POST",
            "/unit_api/system/remove_file",
            data=b"x" * (Limits.defaults().json_body_bytes + 1),
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(code, 413)
        code, _ = await request(self.stub, "DELETE", "/unit_api/system/remove_file")
        self.assertEqual(code, 405)
