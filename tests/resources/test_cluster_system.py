"""The leader's system routes: which units each one reaches, what it sends them, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from treq.testing import StubTreq

from pioreactor_appliance.bodies import form_parts
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.cluster_system import KILL_SWITCH, ClusterSystemApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.policy import AppliancePolicy

from ..helpers import LeaderApiTestCase, request

LIMITS = attrs.evolve(Limits.defaults(), upload_bytes=50_000)
CLOCK = "/unit_api/system/utc_clock"
BOUNDARY = "b0undary"


def multipart(field: str, content: bytes, filename: str | None) -> tuple[bytes, dict[str, str]]:
    disposition = f'form-data; name="{field}"' + ("" if filename is None else f'; filename="{filename}"')
    body = (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


class ClusterSystemTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        self.family = ClusterSystemApi(self.db, self.tasks, self.fanout, "leader", self.root, 900.0, uploads_kept=3)
        return [self.family]

    async def setUp(self) -> None:
        await self.start()
        for unit in ("pio1", "pio2"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
        await self.call("PUT", "/api/workers/pio2/is_active", expect=200, json={"is_active": 0})
        self.fanout.calls.clear()
        self.fanout.timeouts.clear()
        # The upload limit is the request policy's, as on the site.
        policy = AppliancePolicy(self.clock, LIMITS, HostCheck.of(["leader"], []))
        self.upload_stub = StubTreq(Router([self.family], policy=policy))

    async def upload(self, content: bytes, filename: str | None = "release.zip", field: str = "file") -> tuple[int, Any]:
        body, headers = multipart(field, content, filename)
        return await request(self.upload_stub, "POST", "/api/system/upload", data=body, headers=headers)

    async def test_power_actions_reach_the_whole_cluster_or_one_unit(self) -> None:
        for action in ("reboot", "shutdown"):
            self.fanout.calls.clear()
            result = await self.finish_task(await self.call("POST", f"/api/units/$broadcast/system/{action}", expect=202))
            self.assertEqual(self.fanout.calls, [("POST", ["leader", "pio1", "pio2"], f"/unit_api/system/{action}", None)])
            self.assertEqual(result["result"], {u: {"ok": True, "unit": u, "value": {}} for u in ("leader", "pio1", "pio2")})
            self.fanout.calls.clear()
            result = await self.finish_task(await self.call("POST", f"/api/units/pio2/system/{action}", expect=202))
            self.assertEqual(self.fanout.calls, [("POST", ["pio2"], f"/unit_api/system/{action}", None)])
            self.assertEqual(list(result["result"]), ["pio2"])

    async def test_a_dead_unit_is_its_own_envelope(self) -> None:
        self.fanout.down = {"pio1"}
        result = await self.finish_task(await self.call("POST", "/api/units/$broadcast/system/reboot", expect=202))
        self.assertEqual(result["status"], "succeeded")
        self.assertEqual([(u, e["ok"]) for u, e in result["result"].items()], [("leader", True), ("pio1", False), ("pio2", True)])

    async def test_unknown_units_and_wrong_methods_are_refused_without_a_fan_out(self) -> None:
        for method, path in [
            ("POST", "/api/units/nobody/system/reboot"),
            ("POST", "/api/units/localhost/system/shutdown"),
            ("GET", "/api/units/127.0.0.1/system/utc_clock"),
            ("GET", "/api/units/nobody/capabilities"),
            ("GET", "/api/workers/nobody/capabilities"),
        ]:
            await self.error(method, path, 400, "Unknown Pioreactor unit")
        await self.call("GET", "/api/units/pio1/system/reboot", expect=405)
        await self.call("POST", "/api/units/pio1/capabilities", expect=405)
        self.assertEqual(self.fanout.calls, [])

    async def test_clocks_and_capabilities_are_read_from_each_unit(self) -> None:
        await self.finish_task(await self.call("GET", "/api/units/$broadcast/system/utc_clock", expect=202))
        await self.finish_task(await self.call("GET", "/api/units/pio1/capabilities", expect=202))
        await self.finish_task(await self.call("GET", "/api/workers/$broadcast/capabilities", expect=202))
        self.assertEqual(
            self.fanout.calls,
            [
                ("GET", ["leader", "pio1", "pio2"], CLOCK, None),
                ("GET", ["pio1"], "/unit_api/capabilities", None),
                ("GET", ["leader", "pio1", "pio2"], "/unit_api/capabilities", None),
            ],
        )
        self.assertEqual(self.fanout.timeouts, [None, 15.0, 15.0])

    async def test_setting_the_clock_sets_the_leader_first_then_every_worker(self) -> None:
        await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": "leader"})  # the leader as a worker too
        self.fanout.calls.clear()
        self.fanout.timeouts.clear()
        body = {"utc_clock_time": "2026-01-05T12:00:00.000Z"}
        result = await self.finish_task(await self.call("POST", "/api/system/utc_clock", expect=202, json=body))
        self.assertEqual(
            self.fanout.calls,
            [("POST", ["leader"], CLOCK, body), ("POST", ["pio1", "pio2"], CLOCK, body)],
        )
        self.assertEqual(self.fanout.timeouts, [20.0, None])
        self.assertEqual(list(result["result"]), ["leader", "pio1", "pio2"])

    async def test_bad_clock_bodies_are_400_before_any_unit_is_reached(self) -> None:
        for body, mention in [
            ({}, "utc_clock_time"),
            ({"utc_clock_time": "yesterday"}, "Invalid utc_clock_time"),
            ({"utc_clock_time": "2026-01-05T12:00:00+02:00"}, "not in UTC"),
            ({"utc_clock_time": 1767614400}, "utc_clock_time"),
            ({"utc_clock_time": "2026-01-05T12:00:00Z", "unit": "pio1"}, "unit"),
        ]:
            await self.error("POST", "/api/system/utc_clock", 400, mention, json=body)
        code, _ = await self.call_raw("POST", "/api/system/utc_clock", b"")
        self.assertEqual(code, 400)
        self.assertEqual(self.fanout.calls, [])

    async def test_an_upload_is_kept_in_the_data_directory_under_a_name_of_the_leaders(self) -> None:
        code, body = await self.upload(b"PK\x03\x04release")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["message"], "File successfully uploaded")
        saved = Path(body["save_path"])
        self.assertEqual(saved.parent, self.root / "uploads")
        self.assertTrue(saved.name.endswith("_release.zip"), saved)
        self.assertEqual(saved.read_bytes(), b"PK\x03\x04release")
        _, again = await self.upload(b"other")
        self.assertNotEqual(again["save_path"], body["save_path"])
        self.assertEqual(saved.read_bytes(), b"PK\x03\x04release")

    async def test_only_the_newest_uploads_are_kept(self) -> None:
        paths = []
        for n in range(5):
            code, body = await self.upload(b"release %d" % n, filename=f"r{n}.zip")
            self.assertEqual(code, 200, body)
            paths.append(Path(body["save_path"]))
        self.assertEqual(sorted((self.root / "uploads").iterdir()), sorted(paths[2:]))
        self.assertEqual(paths[-1].read_bytes(), b"release 4")

    async def test_uploaded_names_never_leave_the_uploads_folder(self) -> None:
        for name, kept in [
            ("../../etc/passwd", "_passwd"),
            ("..\\..\\evil.zip", "_evil.zip"),
            ("/etc/cron.d/job", "_job"),
            ("..", None),
            ("my release (1).zip", "_my_release__1_.zip"),
            (".hidden", "_hidden"),
        ]:
            code, body = await self.upload(b"x", filename=name)
            if kept is None:
                self.assertEqual(code, 400, body)
                continue
            self.assertEqual(code, 200, (name, body))
            saved = Path(body["save_path"])
            self.assertEqual((saved.parent, saved.name[16:]), (self.root / "uploads", kept))
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), ["uploads"])

    async def test_bad_uploads_are_refused(self) -> None:
        for content, filename, field, status, mention in [
            (b"x", None, "file", 400, "no usable file name"),
            (b"x", "", "file", 400, "no usable file name"),
            (b"x", "a.zip", "archive", 400, "exactly one"),
            (b"x" * (LIMITS.upload_bytes + 1), "big.zip", "file", 413, "larger"),
        ]:
            code, body = await self.upload(content, filename, field)
            self.assertEqual(code, status, body)
            self.assertIn(mention, f"{body['error']} {body['cause']}")
        code, body = await request(self.upload_stub, "POST", "/api/system/upload", json={"file": "x"})
        self.assertEqual((code, body["error"]), (400, "No file part in the request"))
        (self.root / KILL_SWITCH).touch()
        code, body = await self.upload(b"x")
        self.assertEqual(code, 403, body)
        self.assertFalse((self.root / "uploads").exists())

    async def test_update_next_version_updates_the_workers_then_the_leader(self) -> None:
        accepted = await self.call("POST", "/api/system/update_next_version", expect=202)
        self.assertEqual((await self.finish_task(accepted))["result"], True)
        path = "/unit_api/system/update"
        self.assertEqual(self.fanout.calls, [("POST", ["pio1", "pio2"], path, {}), ("POST", ["leader"], path, {})])
        self.assertEqual(self.fanout.timeouts, [910.0, 910.0])
        self.fanout.calls.clear()
        for units, expected in [("pio1", ["pio1"]), ("leader", ["leader"]), ("$broadcast", None)]:
            self.fanout.calls.clear()
            await self.finish_task(await self.call("POST", "/api/system/update_next_version", expect=202, json={"units": units}))
            if expected is not None:
                self.assertEqual([c[1] for c in self.fanout.calls], [expected])
        self.assertEqual([c[1] for c in self.fanout.calls], [["pio1", "pio2"], ["leader"]])

    async def test_an_update_that_fails_on_a_unit_fails_its_task_naming_the_unit(self) -> None:
        self.fanout.down = {"pio2"}
        result = await self.finish_task(await self.call("POST", "/api/system/update_next_version", expect=202))
        self.assertEqual(result["status"], "failed")
        self.assertIn("pio2", result["error"])
        self.assertIn("Could not reach pio2", result["cause"])

    async def test_bad_update_bodies_are_400(self) -> None:
        for body, mention in [
            ({"units": "nobody"}, "Unknown Pioreactor unit"),
            ({"units": ["pio1"]}, "units"),
            ({"unit": "pio1"}, "unit"),
        ]:
            await self.error("POST", "/api/system/update_next_version", 400, mention, json=body)
        code, _ = await self.call_raw("POST", "/api/system/update_next_version", b"{not json")
        self.assertEqual(code, 400)
        self.assertEqual(self.fanout.calls, [])

    async def test_update_from_archive_posts_the_archive_to_the_workers_then_the_leader(self) -> None:
        archive = b"PK\x05\x06" + bytes(18)  # the leader passes it on as it is: each unit checks it
        _, uploaded = await self.upload(archive)
        body = {"release_archive_location": uploaded["save_path"], "units": "$broadcast"}
        accepted = await self.call("POST", "/api/system/update_from_archive", expect=202, json=body)
        self.assertEqual((await self.finish_task(accepted))["result"], True)
        path = "/unit_api/system/update_from_archive"
        self.assertEqual([(c[0], c[1], c[2]) for c in self.fanout.calls], [("POST", ["pio1", "pio2"], path), ("POST", ["leader"], path)])
        self.assertEqual(self.fanout.timeouts, [910.0, 910.0])
        for _, _, _, (content_type, form) in self.fanout.calls:
            parts = form_parts(content_type, form)
            self.assertEqual([(p.filename, p.content) for p in parts["archive"]], [(Path(uploaded["save_path"]).name, archive)])
        for units, expected in [("pio2", [["pio2"]]), ("leader", [["leader"]])]:
            self.fanout.calls.clear()
            body = {"release_archive_location": Path(uploaded["save_path"]).name, "units": units}
            await self.finish_task(await self.call("POST", "/api/system/update_from_archive", expect=202, json=body))
            self.assertEqual([c[1] for c in self.fanout.calls], expected)

    async def test_update_from_archive_fails_naming_each_unit_that_failed(self) -> None:
        self.fanout.down = {"pio1", "leader"}
        _, uploaded = await self.upload(b"PK\x05\x06" + bytes(18))
        body = {"release_archive_location": uploaded["save_path"], "units": "$broadcast"}
        result = await self.finish_task(await self.call("POST", "/api/system/update_from_archive", expect=202, json=body))
        self.assertEqual((result["status"], result["error"]), ("failed", "The update failed on leader, pio1."))
        self.assertIn("pio1: Could not reach pio1", result["cause"])
        self.assertEqual([c[1] for c in self.fanout.calls], [["pio1", "pio2"], ["leader"]])

    async def test_archive_updates_refuse_bad_locations_and_units(self) -> None:
        _, uploaded = await self.upload(b"PK\x03\x04")
        _, not_zip = await self.upload(b"x", filename="notes.txt")
        (self.root / "outside.zip").write_bytes(b"PK")
        for location, units, status, mention in [
            (uploaded["save_path"], "nobody", 400, "Unknown Pioreactor unit"),
            (not_zip["save_path"], "$broadcast", 400, "not a .zip"),
            (str(self.root / "outside.zip"), "$broadcast", 400, "not an uploaded file"),
            ("../outside.zip", "$broadcast", 400, "not an uploaded file"),
            ("/etc/passwd.zip", "$broadcast", 400, "not an uploaded file"),
            ("https://example.com/release.zip", "$broadcast", 400, "not an uploaded file"),
            ("missing.zip", "$broadcast", 400, "does not exist"),
            ("bad\x00.zip", "$broadcast", 400, "cannot be resolved"),
            ("a" * 300 + ".zip", "$broadcast", 400, "cannot be resolved"),
        ]:
            body = {"release_archive_location": location, "units": units}
            await self.error("POST", "/api/system/update_from_archive", status, mention, json=body)
        await self.error("POST", "/api/system/update_from_archive", 400, "units", json={"release_archive_location": uploaded["save_path"]})
        self.assertEqual(self.fanout.calls, [])
