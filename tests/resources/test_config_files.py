"""The leader's config routes: in memory with a recording fan-out, and on a real cluster with a unit that dies."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredLock

from pioreactor_appliance import atomic_files
from pioreactor_appliance.resources.config_api import CONFIG_MAX_CHARACTERS
from pioreactor_appliance.resources.config_files import ConfigFilesApi
from pioreactor_appliance.resources.leader_cache import LeaderCache

from ..cluster import ClusterTestCase
from ..helpers import LeaderApiTestCase, response_of

SHARED = "[cluster.topology]\nleader_hostname=leader\nleader_address=10.0.0.1\n"


class ConfigFilesTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        (self.data_dir / "config.ini").write_text(SHARED)
        self.cache = LeaderCache(self.clock, 10.0)
        return [ConfigFilesApi(self.db, self.fanout, self.clock, self.data_dir, "leader", DeferredLock(), self.cache)]

    async def setUp(self) -> None:
        await self.start()
        for unit in ("pio1", "pio2"):
            await self.call("PUT", "/api/workers", expect=201, json={"pioreactor_unit": unit})
        self.fanout.calls.clear()

    async def history(self, path: str) -> list[dict[str, Any]]:
        return await self.call("GET", path, expect=200)

    async def test_the_list_names_the_shared_file_and_the_units_files_present(self) -> None:
        for name in ("unit_config.ini", "config_pio1.ini", "config_ghost.ini", "notes.ini"):
            (self.data_dir / name).write_text("[x]\n")
        self.assertEqual(
            await self.call("GET", "/api/config/files", expect=200), ["config.ini", "config_pio1.ini", "unit_config.ini"]
        )

    async def test_a_file_is_served_as_text(self) -> None:
        response = await response_of(self.stub, "GET", "/api/config/files/config.ini")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.text(), SHARED)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=10"])
        shared = await response_of(self.stub, "GET", "/api/config/shared")
        self.assertEqual(await shared.text(), SHARED)

    async def test_bad_and_missing_names(self) -> None:
        (self.data_dir.parent / "secret.ini").write_text("[s]\nk=v\n")
        for name in ("%2E%2E", "secret.ini", "config_.ini", "config_a.b.ini", "config_127.0.0.1.ini", "config.INI"):
            await self.error("GET", f"/api/config/files/{name}", 400, "Invalid config file name")
            await self.error("PATCH", f"/api/config/files/{name}", 400, "Invalid config file name", json={"code": SHARED})
            await self.error("GET", f"/api/config/files/{name}/history", 400, "Invalid config file name")
        await self.error("GET", "/api/config/files/config_pio2.ini", 404, "config_pio2.ini")
        for path in ("/api/config/files/../secret.ini", "/api/config/files/..%2Fsecret.ini"):
            await self.error("GET", path, 404, "No route")

    async def test_a_link_out_of_the_data_directory_is_refused(self) -> None:
        outside = self.data_dir.parent / "elsewhere.ini"
        outside.write_text("[s]\n")
        os.symlink(outside, self.data_dir / "config_pio1.ini")
        await self.error("GET", "/api/config/files/config_pio1.ini", 400, "outside")
        await self.error("PATCH", "/api/config/files/config_pio1.ini", 400, "outside", json={"code": "[s]\n"})
        self.assertEqual(outside.read_text(), "[s]\n")

    async def test_a_shared_edit_is_saved_recorded_and_sent_to_every_other_unit(self) -> None:
        self.fanout.down.add("pio2")
        new = SHARED + "[stirring.config]\ninitial_target_rpm=400\n"
        body = await self.call("PATCH", "/api/config/files/config.ini", expect=200, json={"code": new})
        self.assertEqual(body["status"], "partial")
        self.assertEqual(list(body["units"]), ["leader", "pio1", "pio2"])
        self.assertTrue(body["units"]["leader"]["ok"] and body["units"]["pio1"]["ok"])
        self.assertEqual(body["units"]["pio2"]["error"]["kind"], "connection_error")
        self.assertEqual(self.fanout.calls, [("PATCH", ["pio1", "pio2"], "/unit_api/config/shared", {"code": new})])
        self.assertEqual((self.data_dir / "config.ini").read_text(), new)
        self.assertEqual(
            await self.history("/api/config/shared/history"), [{"filename": "config.ini", "timestamp": self.NOW_ISO, "data": new}]
        )
        self.fanout.down.clear()
        self.clock.advance(60)
        body = await self.call("PATCH", "/api/config/shared", expect=200, json={"code": SHARED})
        self.assertEqual(body["status"], "success")
        rows = await self.history("/api/config/files/config.ini/history")
        self.assertEqual([row["data"] for row in rows], [SHARED, new])  # newest first

    async def test_a_bad_shared_edit_changes_nothing(self) -> None:
        cases = [
            ("[a]\nx=1\n[a]\ny=2\n", "duplicate section"),
            ("x=1\n", "before any [section]"),
            ("[cluster.topology]\nleader_hostname=leader\n", "leader_address"),
            (SHARED + "[cluster.addresses]\npio1=http://10.0.0.2\n", "not a URL"),
            (SHARED + "[mqtt]\nbroker_port=eighteen\n", "must be an integer"),
        ]
        for code, mention in cases:
            for path in ("/api/config/shared", "/api/config/files/config.ini"):
                await self.error("PATCH", path, 400, mention, json={"code": code})
        await self.error("PATCH", "/api/config/shared", 400, "at most", json={"code": "#" * (CONFIG_MAX_CHARACTERS + 1)})
        await self.error("PATCH", "/api/config/shared", 400, "Invalid request body", json={"code": 1})
        code, _ = await self.call_raw("PATCH", "/api/config/shared", b"")
        self.assertEqual(code, 400)
        self.assertEqual((self.data_dir / "config.ini").read_text(), SHARED)
        self.assertEqual(self.fanout.calls, [])
        self.assertEqual(await self.history("/api/config/shared/history"), [])

    async def test_a_failed_write_keeps_the_old_file_and_records_nothing(self) -> None:
        def broken_replace(source: str, target: Any) -> None:
            raise OSError("disk full")

        self.patch(atomic_files.os, "replace", broken_replace)
        await self.error("PATCH", "/api/config/shared", 503, "disk full", json={"code": SHARED + "[x]\n"})
        self.assertEqual((self.data_dir / "config.ini").read_text(), SHARED)
        self.assertEqual(sorted(p.name for p in self.data_dir.iterdir()), ["config.ini"])  # no temporary file left
        self.assertEqual(await self.history("/api/config/shared/history"), [])
        self.assertEqual(self.fanout.calls, [])

    async def test_a_legacy_unit_file_is_kept_here_and_sent_to_its_unit(self) -> None:
        self.fanout.down.add("pio1")
        code = "[stirring.config]\ninitial_target_rpm=300\n"
        body = await self.call("PATCH", "/api/config/files/config_pio1.ini", expect=200, json={"code": code})
        self.assertEqual((body["status"], body["units"]["pio1"]["ok"]), ("partial", False))
        self.assertEqual(self.fanout.calls, [("PATCH", ["pio1"], "/unit_api/config/specific", {"code": code})])
        self.assertEqual((self.data_dir / "config_pio1.ini").read_text(), code)
        rows = await self.history("/api/config/files/config_pio1.ini/history")
        self.assertEqual([(r["filename"], r["data"]) for r in rows], [("unit_config.ini::pio1", code)])
        self.assertEqual(await self.history("/api/config/units/pio1/specific/history"), rows)
        await self.error("PATCH", "/api/config/files/config_ghost.ini", 400, "Unknown Pioreactor unit: ghost", json={"code": code})
        await self.error("PATCH", "/api/config/files/config_pio1.ini", 400, "must be an integer", json={"code": "[mqtt]\nbroker_port=x\n"})
        self.assertEqual((self.data_dir / "config_pio1.ini").read_text(), code)

    async def test_the_leaders_own_unit_config_is_written_here(self) -> None:
        code = "[stirring.config]\ninitial_target_rpm=350\n"
        body = await self.call("PATCH", "/api/config/files/unit_config.ini", expect=200, json={"code": code})
        self.assertEqual(body, {"status": "success", "units": {"leader": {"ok": True, "unit": "leader", "value": {}}}})
        self.assertEqual((self.data_dir / "unit_config.ini").read_text(), code)
        response = await response_of(self.stub, "GET", "/api/config/units/leader/specific")
        self.assertEqual(await response.text(), code)
        self.assertEqual(self.fanout.calls, [])
        self.assertEqual(len(await self.history("/api/config/files/unit_config.ini/history")), 1)

    async def test_merged_configs_of_the_cluster_and_of_one_unit(self) -> None:
        self.fanout.down.add("pio2")
        body = await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(sorted(body["configs"]), ["leader", "pio1"])
        self.assertEqual(body["configs"]["leader"]["cluster.topology"]["leader_address"], "10.0.0.1")
        self.assertEqual(body["configs"]["leader"]["cluster.addresses"]["leader"], "10.0.0.1")
        self.assertEqual(list(body["errors"]), ["pio2"])
        self.assertEqual(self.fanout.calls, [("GET", ["pio1", "pio2"], "/unit_api/config/merged", None)])
        await self.error("GET", "/api/config/units/pio2", 424, "Could not reach pio2")
        await self.error("GET", "/api/config/units/ghost", 400, "Unknown Pioreactor unit: ghost")
        await self.error("GET", "/api/config/units/127.0.0.1", 400, "Unknown Pioreactor unit")

    async def test_merged_configs_are_reused_for_10_s_and_forgotten_by_an_edit(self) -> None:
        merged = ("GET", ["pio1"], "/unit_api/config/merged", None)
        await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.clock.advance(9.9)
        await self.call("GET", "/api/config/units/pio1", expect=200)
        self.assertEqual(self.fanout.calls, [("GET", ["pio1", "pio2"], "/unit_api/config/merged", None)])
        self.clock.advance(0.1)
        await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(self.fanout.calls[-1], ("GET", ["pio1", "pio2"], "/unit_api/config/merged", None))

        self.fanout.calls.clear()
        code = "[stirring.config]\ninitial_target_rpm=300\n"
        await self.call("PATCH", "/api/config/units/pio1/specific", expect=200, json={"code": code})
        await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(self.fanout.calls[1:], [merged])  # pio2 is still the one kept

        await self.call("PATCH", "/api/config/files/config_pio2.ini", expect=200, json={"code": code})
        await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(self.fanout.calls[-1], ("GET", ["pio2"], "/unit_api/config/merged", None))

        await self.call("PATCH", "/api/config/shared", expect=200, json={"code": SHARED})
        self.fanout.calls.clear()
        self.fanout.down.add("pio2")
        await self.call("GET", "/api/config/units/$broadcast", expect=200)
        body = await self.call("GET", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(list(body["errors"]), ["pio2"])
        self.assertEqual(
            self.fanout.calls,
            [("GET", ["pio1", "pio2"], "/unit_api/config/merged", None), ("GET", ["pio2"], "/unit_api/config/merged", None)],
        )  # every unit forgotten by the shared edit; pio2's failure is never kept

    async def test_one_units_specific_config(self) -> None:
        code = "[stirring.config]\ninitial_target_rpm=300\n"
        for method in ("GET", "PATCH"):
            await self.error(method, "/api/config/units/$broadcast/specific", 400, "$broadcast", json={"code": code})
            await self.error(method, "/api/config/units/ghost/specific", 400, "Unknown Pioreactor unit: ghost", json={"code": code})
        await self.error("GET", "/api/config/units/$broadcast/specific/history", 400, "$broadcast")
        await self.error("GET", "/api/config/units/a.b/specific/history", 400, "Invalid unit name")
        await self.error("PATCH", "/api/config/units/pio1/specific", 400, "duplicate option", json={"code": "[a]\nx=1\nx=2\n"})
        self.assertEqual(self.fanout.calls, [])
        body = await self.call("PATCH", "/api/config/units/pio1/specific", expect=200, json={"code": code})
        self.assertEqual(body["status"], "success")
        self.fanout.down.add("pio1")
        await self.error("PATCH", "/api/config/units/pio1/specific", 424, "Could not reach pio1", json={"code": code + "[x]\n"})
        rows = await self.history("/api/config/units/pio1/specific/history")
        self.assertEqual([r["data"] for r in rows], [code])  # the refused edit is not recorded
        self.assertEqual(await self.history("/api/config/units/pio2/specific/history"), [])


class ConfigSyncClusterTests(ClusterTestCase):
    """The shared config reaches the real workers; one that is stopped fails alone."""

    async def test_a_shared_edit_reaches_the_workers_and_a_dead_one_fails_alone(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        data_dirs = {unit: service.getServiceNamed("jobs")._data_dir for unit, service in self.services.items()}
        shared = (data_dirs["leader"] / "config.ini").read_text()
        first = shared + "[stirring.config]\ninitial_target_rpm=410\n"
        body = await self.call("PATCH", "leader", "/api/config/shared", expect=200, json={"code": first})
        self.assertEqual(body["status"], "success", body)
        for unit in ("leader", "pio1", "pio2"):
            self.assertEqual((data_dirs[unit] / "config.ini").read_text(), first)
        self.assertTrue(body["units"]["pio1"]["value"]["restart_required"])

        await self.services["pio2"].stopService()
        # The stopped service only stopped listening: drop the leader's kept-alive connection to it, as its death would.
        await self.services["leader"].getServiceNamed("fanout")._pool.closeCachedConnections()
        second = shared + "[stirring.config]\ninitial_target_rpm=420\n"
        body = await self.call("PATCH", "leader", "/api/config/files/config.ini", expect=200, json={"code": second})
        self.assertEqual(body["status"], "partial")
        self.assertTrue(body["units"]["pio1"]["ok"])
        self.assertEqual((body["units"]["pio2"]["ok"], body["units"]["pio2"]["error"]["kind"]), (False, "connection_error"))
        self.assertEqual((data_dirs["pio1"] / "config.ini").read_text(), second)
        self.assertEqual((data_dirs["pio2"] / "config.ini").read_text(), first)
        rows = await self.call("GET", "leader", "/api/config/shared/history", expect=200)
        self.assertEqual([row["data"] for row in rows], [second, first])

        merged = await self.call("GET", "leader", "/api/config/units/$broadcast", expect=200)
        self.assertEqual(merged["configs"]["pio1"]["stirring.config"]["initial_target_rpm"], "420")
        self.assertEqual(list(merged["errors"]), ["pio2"])

    async def test_a_units_specific_config_through_the_leader(self) -> None:
        await self.start_cluster(["pio1"])
        code = "[stirring.config]\ninitial_target_rpm=333\n"
        await self.call("PATCH", "leader", "/api/config/units/pio1/specific", expect=200, json={"code": code})
        response = await self.http.get(self.url("leader", "/api/config/units/pio1/specific"))
        self.assertEqual((response.code, await response.text()), (200, code))
        # The worker's own check is relayed: this one passes the leader's (it parses) and fails the worker's.
        error = await self.call("PATCH", "pio1", "/unit_api/config/shared", expect=400, json={"code": "[x]\n"})
        self.assertIn("leader_address", error["cause"])

    async def test_every_units_config_zipped_with_a_dead_unit_omitted(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        pio1 = "[stirring.config]\ninitial_target_rpm=333\n"
        leaders = "[od_reading.config]\nsamples_per_second=0.3\n"
        await self.call("PATCH", "leader", "/api/config/units/pio1/specific", expect=200, json={"code": pio1})
        await self.call("PATCH", "leader", "/api/config/units/leader/specific", expect=200, json={"code": leaders})
        await self.kill("pio2")

        response = await self.http.get(self.url("leader", "/api/config/zipped"))
        body = await response.content()
        self.assertEqual(response.code, 200, body[:500])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/zip"])
        self.assertEqual(response.headers.getRawHeaders(b"content-disposition"), [b'attachment; filename="configuration_inis.zip"'])
        leader_dir = self.services["leader"].getServiceNamed("jobs")._data_dir
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            names = sorted(archive.namelist())
            files = {name: archive.read(name).decode() for name in names}
        self.assertEqual(names, ["config.ini", "leader/unit_config.ini", "metadata.json", "pio1/unit_config.ini"])
        self.assertEqual(files["config.ini"], (leader_dir / "config.ini").read_text())
        self.assertEqual((files["pio1/unit_config.ini"], files["leader/unit_config.ini"]), (pio1, leaders))
        metadata = json.loads(files["metadata.json"])
        self.assertEqual(metadata["metadata_version"], 1)
        self.assertEqual(metadata["included_config_files"], ["config.ini", "leader/unit_config.ini", "pio1/unit_config.ini"])
        self.assertEqual(metadata["omitted_units"], ["pio2"])
        self.assertEqual(metadata["omitted_because"]["pio2"]["kind"], "connection_error")
        self.assertRegex(metadata["downloaded_at_utc"], r"^\d{4}-\d\d-\d\dT")

        # Only GET: anything else is the JSON 405 every route gives.
        error = await self.call("POST", "leader", "/api/config/zipped", expect=405)
        self.assertEqual((error["error"], error["remediation"]), ("Method not allowed.", "Use one of: GET, HEAD."))
