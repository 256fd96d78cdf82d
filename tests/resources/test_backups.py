"""``/unit_api/zipped_dot_pioreactor`` and ``/unit_api/import_zipped_dot_pioreactor``."""

from __future__ import annotations

import io
import json
import sqlite3
import stat
import zipfile
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.backups import BackupsApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.policy import AppliancePolicy
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import _settle, request

BOUNDARY = "pioreactor-test-boundary"
LIMITS = attrs.evolve(Limits.defaults(), zip_entries=50, upload_bytes=200_000)


def multipart(fields: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n".encode()
            + value
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def zipped(entries: dict[str, bytes], metadata: dict[str, Any] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        if metadata is not None:
            archive.writestr("pioreactor_export_metadata.json", json.dumps(metadata))
    return buffer.getvalue()


class BackupsTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "plugins").mkdir(parents=True)
        (self.root / "plugins" / "my_plugin.py").write_text("print('old')\n")
        (self.root / "plugins" / "stale.py").write_text("")
        (self.root / "storage" / "calibrations").mkdir(parents=True)
        (self.root / "storage" / "calibrations" / "od.yaml").write_text("old: 1\n")
        (self.root / "ui").mkdir()
        (self.root / "ui" / "job.yaml").write_text("name: x\n")
        (self.root / "config.ini").write_text("[x]\na=1\n")
        (self.root / "credentials.json").write_text('{"users": ["me"]}')
        (self.root / "cluster_secret").write_text("s3cret")
        sqlite3.connect(self.root / "storage" / "persistent.sqlite").close()
        db = sqlite3.connect(self.root / "storage" / "disguised.bin")
        db.execute("create table t (x)")
        db.commit()
        db.close()
        outside = Path(self.mktemp()).absolute()
        outside.mkdir()
        (outside / "passwd").write_text("root:x:0:0")
        (self.root / "escape").symlink_to(outside / "passwd")
        (self.root / "escape_dir").symlink_to(outside)
        self.clock = Clock()
        self.restarts: list[str] = []
        self.tasks = TaskRegistry(self.clock, "pio1", max_count=10, max_age=60)
        self.stub = self.stub_with(LIMITS)

    def stub_with(self, limits: Limits) -> StubTreq:
        policy = AppliancePolicy(self.clock, limits, HostCheck.of(["leader"], []))
        return StubTreq(
            Router(
                [
                    BackupsApi(
                        self.root,
                        self.tasks,
                        "pio1",
                        "leader",
                        limits,
                        restart=self.restart,
                        keep_backups=2,
                    )
                ],
                policy=policy,
            )
        )

    def restart(self, why: str) -> float:
        self.restarts.append(why)
        return 5.0

    async def export(self) -> tuple[int, bytes, Any]:
        what = "GET zipped_dot_pioreactor"
        response = await _settle(
            self.stub,
            self.stub.request("GET", "http://leader/unit_api/zipped_dot_pioreactor"),
            what,
        )
        body = await _settle(self.stub, response.content(), what)
        return response.code, body, response.headers

    async def upload(
        self, archive: bytes | None, stub: StubTreq | None = None, name: str = "archive"
    ) -> tuple[int, Any]:
        if archive is None:
            return await request(
                stub or self.stub, "POST", "/unit_api/import_zipped_dot_pioreactor"
            )
        body, headers = multipart({name: archive})
        return await request(
            stub or self.stub,
            "POST",
            "/unit_api/import_zipped_dot_pioreactor",
            data=body,
            headers=headers,
        )

    async def finished(self, accepted: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(accepted["task_id"])
        self.clock.advance(0)
        await task.deferred
        return dict(task.body())

    def tree(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    async def test_export_holds_the_data_directory_but_no_secrets_databases_or_escapes(
        self,
    ) -> None:
        code, body, headers = await self.export()
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/zip"])
        self.assertIn(
            b"pio1_dot_pioreactor.zip", headers.getRawHeaders(b"content-disposition")[0]
        )
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            names = set(archive.namelist())
            self.assertEqual(archive.read("plugins/my_plugin.py"), b"print('old')\n")
            metadata = json.loads(archive.read("pioreactor_export_metadata.json"))
        self.assertTrue(
            {"config.ini", "plugins/", "storage/calibrations/od.yaml", "ui/job.yaml"}
            <= names,
            names,
        )
        for secret in (
            "credentials.json",
            "cluster_secret",
            "storage/persistent.sqlite",
            "storage/disguised.bin",
            "escape",
            "escape_dir/",
            "escape_dir/passwd",
        ):
            self.assertNotIn(secret, names)
        self.assertNotIn(b"s3cret", body)
        self.assertEqual(
            (metadata["name"], metadata["leader_hostname"], metadata["is_leader"]),
            ("pio1", "leader", False),
        )

    async def test_export_past_the_limits_is_413_and_the_kill_switch_403(self) -> None:
        self.stub = self.stub_with(attrs.evolve(LIMITS, zip_entries=3))
        code, body, _ = await self.export()
        self.assertEqual(code, 413, body)
        (self.root / "DISALLOW_UI_FILE_SYSTEM").write_text("")
        code, body, _ = await self.export()
        self.assertEqual(code, 403, body)
        code, body2 = await self.upload(zipped({"config.ini": b"[x]\n"}))
        self.assertEqual(code, 403, body2)

    async def test_an_export_imports_back_and_replaces_files(self) -> None:
        _, exported, _ = await self.export()
        with zipfile.ZipFile(io.BytesIO(exported)) as source:
            entries = {
                i.filename: source.read(i) for i in source.infolist() if not i.is_dir()
            }
        entries["plugins/my_plugin.py"] = b"print('new')\n"
        del entries["plugins/stale.py"]
        del entries["ui/job.yaml"]
        entries["ui/other.yaml"] = b"name: y\n"
        entries["credentials.json"] = b'{"users": ["intruder"]}'
        code, accepted = await self.upload(zipped(entries))
        self.assertEqual(code, 202, accepted)
        result = await self.finished(accepted)
        self.assertEqual(result["status"], "succeeded", result)
        outcome = result["result"]
        self.assertEqual(
            (outcome["restart_required"], outcome["restart_in_seconds"], len(self.restarts)),
            (True, 5.0, 1),
        )
        self.assertEqual(
            (self.root / "plugins" / "my_plugin.py").read_text(), "print('new')\n"
        )
        self.assertFalse((self.root / "plugins" / "stale.py").exists())
        self.assertFalse(
            (self.root / "ui" / "job.yaml").exists()
        )  # the archive had ui/ without it
        self.assertEqual(
            (self.root / "credentials.json").read_text(), '{"users": ["me"]}'
        )
        self.assertEqual((self.root / "cluster_secret").read_text(), "s3cret")
        self.assertTrue((self.root / "storage" / "persistent.sqlite").exists())
        self.assertIn("credentials.json", outcome["ignored"])
        self.assertIn("plugins", outcome["replaced"])
        self.assertIn("storage/persistent.sqlite", outcome["kept"])
        backup = Path(outcome["backup"])
        self.assertEqual((backup / "plugins" / "stale.py").read_text(), "")
        self.assertFalse(
            any(
                p.name.startswith(f".{self.root.name}-import-")
                for p in self.root.parent.iterdir()
            )
        )

    async def test_only_the_newest_backups_are_kept(self) -> None:
        backups = []
        for n in range(3):
            code, accepted = await self.upload(zipped({"config.ini": f"[x]\nn={n}\n".encode()}, {"name": "pio1"}))
            self.assertEqual(code, 202, accepted)
            result = await self.finished(accepted)
            backups.append(Path(result["result"]["backup"]))
        self.assertEqual([b.exists() for b in backups], [False, True, True])
        self.assertEqual((backups[2] / "config.ini").read_text(), "[x]\nn=1\n")
        self.assertEqual(len(self.restarts), 3)

    async def test_a_refused_or_failed_import_does_not_restart(self) -> None:
        code, body = await self.upload(zipped({"config.ini": b"[x"}))
        self.assertEqual(code, 400, body)
        self.assertEqual(self.restarts, [])

    async def test_a_folder_absent_from_the_archive_is_kept_only_for_ui_and_hardware(
        self,
    ) -> None:
        code, accepted = await self.upload(
            zipped({"config.ini": b"[y]\nb=2\n"}, {"name": "pio1"})
        )
        self.assertEqual(code, 202, accepted)
        outcome = (await self.finished(accepted))["result"]
        self.assertEqual((self.root / "config.ini").read_text(), "[y]\nb=2\n")
        self.assertTrue((self.root / "ui" / "job.yaml").exists())
        self.assertFalse((self.root / "plugins").exists())
        self.assertFalse((self.root / "storage" / "calibrations").exists())
        self.assertTrue((self.root / "storage" / "disguised.bin").exists())
        self.assertFalse((self.root / "pioreactor_export_metadata.json").exists())
        self.assertTrue((Path(outcome["backup"]) / "plugins" / "my_plugin.py").exists())

    async def test_a_failing_rename_puts_everything_back(self) -> None:
        before = self.tree()
        real_rename = Path.rename
        calls = []

        def flaky(self: Path, target: Any) -> Any:
            calls.append(self)
            if len(calls) == 4:
                raise OSError("disk full")
            return real_rename(self, target)

        code, accepted = await self.upload(
            zipped(
                {
                    "config.ini": b"[y]\n",
                    "plugins/my_plugin.py": b"new",
                    "ui/a.yaml": b"",
                }
            )
        )
        self.assertEqual(code, 202, accepted)
        with mock.patch.object(Path, "rename", flaky):
            result = await self.finished(accepted)
        self.assertEqual(result["status"], "failed", result)
        self.flushLoggedErrors(OSError)
        self.assertGreaterEqual(len(calls), 4)
        self.assertEqual(self.restarts, [])
        self.assertEqual(self.tree(), before)

    async def test_bad_uploads_are_refused_and_nothing_changes(self) -> None:
        before = self.tree()
        bomb = zipped({"config.ini": b"[x]\n", "zeros.bin": b"\0" * 1_000_000})
        self.assertLess(len(bomb), LIMITS.upload_bytes)
        link = io.BytesIO()
        with zipfile.ZipFile(link, "w") as archive:
            info = zipfile.ZipInfo("plugins/evil.py")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
        cases: list[tuple[bytes | None, str, int, str]] = [
            (None, "archive", 400, "No archive uploaded"),
            (b"x", "other", 400, "No archive uploaded"),
            (b"not a zip at all", "archive", 400, "not a valid zip archive"),
            (zipped({"../outside.py": b"x"}), "archive", 400, "outside"),
            (zipped({"/etc/cron.d/x": b"x"}), "archive", 400, "outside"),
            (link.getvalue(), "archive", 400, "link"),
            (
                zipped({f"f{i}": b"" for i in range(LIMITS.zip_entries + 1)}),
                "archive",
                413,
                "entries",
            ),
            (bomb, "archive", 413, "zip bomb"),
            (
                zipped({"config.ini": b"[x]\na=1\n[x]\nb=2\n", "plugins/new.py": b""}),
                "archive",
                400,
                "config.ini does not parse",
            ),
            (
                zipped({"unit_config.ini": b"a=1\n"}),
                "archive",
                400,
                "unit_config.ini does not parse",
            ),
            (
                zipped({"config.ini": b"[x]\n"}, {"name": "pio2"}),
                "archive",
                400,
                "'pio2'",
            ),
            (zipped({"config.ini": b"[x]\n"}, {"nome": 1}), "archive", 400, "metadata"),
            (b"x" * (LIMITS.upload_bytes + 1), "archive", 413, "too large"),
        ]
        for archive, name, status, mention in cases:
            code, body = await self.upload(archive, name=name)
            self.assertEqual(code, status, (mention, body))
            self.assertIn(mention, f"{body['error']} {body['cause']}", body)
        code, body = await request(
            self.stub,
            "POST",
            "/unit_api/import_zipped_dot_pioreactor",
            json={"archive": "x"},
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(self.tree(), before)
        self.assertEqual(
            sorted(
                p.name for p in self.root.parent.iterdir() if p.name.startswith(".")
            ),
            [],
        )

    async def test_a_second_import_while_one_is_pending_is_409(self) -> None:
        archive = zipped({"config.ini": b"[y]\n"}, {"name": "pio1"})
        code, accepted = await self.upload(archive)
        self.assertEqual(code, 202, accepted)
        code, body = await self.upload(archive)
        self.assertEqual(code, 409, body)
        await self.finished(accepted)
        code, again = await self.upload(archive)
        self.assertEqual(code, 202, again)
        self.assertEqual((await self.finished(again))["status"], "succeeded")
