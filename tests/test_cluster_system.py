"""The leader's system routes end to end: a leader and two workers as real services on loopback, harmless commands."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from .cluster import ClusterTestCase

UNITS = ("leader", "pio1", "pio2")


def release(wheel: str) -> bytes:
    """A release archive of one wheel (its content is not read: the cluster's update command is ``true``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(wheel, b"a wheel")
        archive.writestr("sha256sums.txt", b"...")
    return buffer.getvalue()


class ClusterSystemTests(ClusterTestCase):
    async def upload(self, data: bytes) -> str:
        """Upload a release archive to the leader; the save_path it answers."""
        files = {"file": ("release.zip", "application/zip", io.BytesIO(data))}
        uploaded = await self.call("POST", "leader", "/api/system/upload", expect=200, files=files)
        return str(uploaded["save_path"])

    async def update_from_archive(self, location: str, units: str) -> dict[str, Any]:
        body = {"release_archive_location": location, "units": units}
        return await self.wait_for_result(await self.call("POST", "leader", "/api/system/update_from_archive", expect=202, json=body))

    async def result_of(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self.wait_for_result(await self.call(method, "leader", path, expect=202, **kwargs))
        self.assertEqual(body["status"], "succeeded", body)
        return body["result"]

    async def test_reboot_broadcast_clock_and_capabilities_give_one_envelope_per_unit(self) -> None:
        await self.start_cluster(["pio1", "pio2"])

        rebooted = await self.result_of("POST", "/api/units/$broadcast/system/reboot")
        self.assertEqual(rebooted, {u: {"ok": True, "unit": u, "value": True} for u in UNITS})

        clock = {"utc_clock_time": "2026-01-05T12:00:00.000Z"}
        set_clock = await self.result_of("POST", "/api/system/utc_clock", json=clock)
        self.assertEqual(set_clock, {u: {"ok": True, "unit": u, "value": True} for u in UNITS})

        clocks = await self.result_of("GET", "/api/units/$broadcast/system/utc_clock")
        self.assertEqual(list(clocks), list(UNITS))
        for unit, envelope in clocks.items():
            self.assertEqual((envelope["ok"], envelope["unit"], list(envelope["value"])), (True, unit, ["clock_time"]))
            self.assertTrue(envelope["value"]["clock_time"].endswith("Z"))

        for family in ("units", "workers"):
            capabilities = await self.result_of("GET", f"/api/{family}/pio1/capabilities")
            self.assertEqual(list(capabilities), ["pio1"])
            jobs = {entry["job_name"] for entry in capabilities["pio1"]["value"]}
            self.assertIn("stirring", jobs)

        updated = await self.wait_for_result(await self.call("POST", "leader", "/api/system/update_next_version", expect=202))
        self.assertEqual((updated["status"], updated["result"]), ("succeeded", True))

    async def test_a_stopped_worker_fails_alone(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        await self.services["pio2"].stopService()
        await self.services["leader"].getServiceNamed("fanout")._pool.closeCachedConnections()
        body = await self.wait_for_result(await self.call("POST", "leader", "/api/units/$broadcast/system/shutdown", expect=202))
        self.assertEqual(body["status"], "succeeded")
        self.assertEqual([(u, e["ok"]) for u, e in body["result"].items()], [("leader", True), ("pio1", True), ("pio2", False)])
        self.assertEqual(body["result"]["pio2"]["error"]["kind"], "connection_error")
        failed = await self.wait_for_result(await self.call("POST", "leader", "/api/system/update_next_version", expect=202))
        self.assertEqual(failed["status"], "failed")
        self.assertIn("pio2", failed["error"])
        # A worker that is down fails an archive update too, named with why.
        failed = await self.update_from_archive(await self.upload(release("pioreactor_appliance-26.7.2-py3-none-any.whl")), "pio2")
        self.assertEqual((failed["status"], failed["error"]), ("failed", "The update failed on pio2."))
        self.assertIn("pio2: Could not reach pio2", failed["cause"])

    async def test_a_release_archive_updates_every_unit_and_a_bad_one_none(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        # Each unit checks the archive before its 202 (api-deviations "System commands"): none installs this one.
        refused = await self.update_from_archive(await self.upload(release("pioreactor-26.7.2-py3-none-any.whl")), "$broadcast")
        self.assertEqual((refused["status"], refused["error"]), ("failed", "The update failed on leader, pio1, pio2."))
        self.assertIn("pio1: Invalid release archive.", refused["cause"])
        updated = await self.update_from_archive(await self.upload(release("pioreactor_appliance-26.7.2-py3-none-any.whl")), "$broadcast")
        self.assertEqual((updated["status"], updated["result"]), ("succeeded", True), updated)
