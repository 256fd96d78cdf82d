"""The units' archives through the leader, against a leader and real workers on loopback, one of them stopped."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance.hardware.sim.calibrations import install_pump_calibrations

from ..cluster import ClusterTestCase


class UnitArchivesTests(ClusterTestCase):
    async def download(self, path: str, expect: int = 200) -> tuple[Any, bytes]:
        response = await self.http.get(self.url("leader", path))
        body = await response.content()
        self.assertEqual(response.code, expect, body[:500])
        return response, body

    def data_dir(self, unit: str) -> Path:
        return self.services[unit].getServiceNamed("jobs")._data_dir

    def assertFailed(self, envelope: dict[str, Any], unit: str, kind: str) -> None:
        self.assertEqual((envelope["ok"], envelope["unit"], envelope["error"]["kind"]), (False, unit, kind), envelope)

    async def test_zipped_data_directories_and_calibrations_with_a_dead_worker(self) -> None:
        await self.start_cluster(["pio1", "pio2", "pio3"])
        for unit in ("pio1", "pio2", "pio3"):
            install_pump_calibrations(self.data_dir(unit), unit)

        response, body = await self.download("/api/units/pio1/zipped_dot_pioreactor")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/zip"])
        self.assertIn(b'filename="dot_pioreactor.zip"', response.headers.getRawHeaders(b"content-disposition")[0])
        with zipfile.ZipFile(io.BytesIO(body)) as one:
            self.assertEqual(json.loads(one.read("pioreactor_export_metadata.json"))["name"], "pio1")

        await self.kill("pio2")

        response, body = await self.download("/api/units/$broadcast/zipped_dot_pioreactor")
        self.assertIn(b'filename="cluster_dot_pioreactor.zip"', response.headers.getRawHeaders(b"content-disposition")[0])
        self.assertEqual(response.headers.getRawHeaders(b"x-pioreactor-failed-units"), [b"pio2"])
        with zipfile.ZipFile(io.BytesIO(body)) as cluster:
            names = sorted(cluster.namelist())
            self.assertEqual(names, ["failed_units.json", "leader/dot_pioreactor.zip", "pio1/dot_pioreactor.zip", "pio3/dot_pioreactor.zip"])
            for unit in ("leader", "pio1", "pio3"):
                with zipfile.ZipFile(io.BytesIO(cluster.read(f"{unit}/dot_pioreactor.zip"))) as inner:
                    self.assertEqual(json.loads(inner.read("pioreactor_export_metadata.json"))["name"], unit)
            failed = json.loads(cluster.read("failed_units.json"))
        self.assertEqual(list(failed), ["pio2"])
        self.assertFailed(failed["pio2"], "pio2", "connection_error")

        response, body = await self.download("/api/workers/$broadcast/zipped_calibrations")
        self.assertIn(b'filename="calibration_yamls.zip"', response.headers.getRawHeaders(b"content-disposition")[0])
        # The leader is registered as a worker too; it has no calibrations, so its unit answers 404.
        self.assertEqual(response.headers.getRawHeaders(b"x-pioreactor-failed-units"), [b"leader,pio2"])
        with zipfile.ZipFile(io.BytesIO(body)) as merged:
            failed = json.loads(merged.read("failed_units.json"))
            files = {name: merged.read(name) for name in merged.namelist() if name != "failed_units.json"}
        self.assertFailed(failed["leader"], "leader", "http_error")
        self.assertEqual(failed["leader"]["status_code"], 404)
        self.assertFailed(failed["pio2"], "pio2", "connection_error")
        expected = {}
        for unit in ("pio1", "pio3"):
            root = self.data_dir(unit) / "storage" / "calibrations"
            expected.update({f"{unit}/{p.relative_to(root).as_posix()}": p.read_bytes() for p in root.rglob("*.yaml")})
        self.assertEqual(len(expected), 6)
        self.assertEqual(files, expected)

        response, body = await self.download("/api/workers/pio3/zipped_calibrations")
        self.assertIsNone(response.headers.getRawHeaders(b"x-pioreactor-failed-units"))
        with zipfile.ZipFile(io.BytesIO(body)) as merged:
            self.assertEqual(sorted(merged.namelist()), sorted(n for n in expected if n.startswith("pio3/")))

        for path in ("/api/units/pio2/zipped_dot_pioreactor", "/api/workers/pio2/zipped_calibrations"):
            error = await self.call("GET", "leader", path, expect=424)
            self.assertIn("pio2", error["error"])
        error = await self.call("GET", "leader", "/api/workers/nobody/zipped_calibrations", expect=400)
        self.assertEqual(error["error"], "Unknown Pioreactor worker: nobody")
        error = await self.call("GET", "leader", "/api/units/nobody/zipped_dot_pioreactor", expect=400)
        self.assertEqual(error["error"], "Unknown Pioreactor unit: nobody")

    async def import_(self, unit: str, archive: bytes | None, expect: int) -> Any:
        files = {"archive": ("dot_pioreactor.zip", "application/zip", io.BytesIO(archive))} if archive is not None else {"other": ("x", io.BytesIO(b"x"))}
        return await self.call("POST", "leader", f"/api/units/{unit}/import_zipped_dot_pioreactor", expect=expect, files=files)

    async def test_an_archive_imported_through_the_leader(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        _, pio1 = await self.download("/api/units/pio1/zipped_dot_pioreactor")
        _, pio2 = await self.download("/api/units/pio2/zipped_dot_pioreactor")

        # The unit's own checks answer through the leader: an archive of pio2 is not pio1's to import.
        error = await self.import_("pio1", pio2, 400)
        self.assertIn("pio2", error["error"] + error["cause"])
        error = await self.import_("pio1", b"not a zip", 400)
        self.assertEqual(error["error"], "Uploaded file is not a valid zip archive")
        error = await self.import_("pio1", None, 400)
        self.assertEqual(error["error"], "No archive uploaded")
        error = await self.import_("$broadcast", pio1, 400)
        self.assertEqual(error["error"], "$broadcast is not accepted here.")
        error = await self.import_("nobody", pio1, 400)
        self.assertEqual(error["error"], "Unknown Pioreactor unit: nobody")

        accepted = await self.import_("pio1", pio1, 202)
        self.assertEqual((accepted["unit"], accepted["status"]), ("pio1", "pending"))
        outcome = await self.wait_for_result(accepted, unit="pio1")  # the task is the unit's own
        self.assertEqual(outcome["status"], "succeeded", outcome)
        self.assertTrue(outcome["result"]["restart_required"])
        await deferLater(reactor, 0.3)  # the unit's (harmless) restart command runs after its power delay

        await self.kill("pio2")
        error = await self.import_("pio2", pio2, 424)
        self.assertIn("pio2", error["error"])
