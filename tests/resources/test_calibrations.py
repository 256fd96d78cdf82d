"""``/unit_api`` calibrations, estimators and their active pointers, in memory on a real data directory."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from attrs import evolve
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pioreactor_appliance.calibrations import active_calibration
from pioreactor_appliance.jobs.unit_state import PersistentCache
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.openapi import document
from pioreactor_appliance.resources.calibrations import CalibrationsApi
from pioreactor_appliance.resources.routing import Router, route_table

from ..helpers import request, response_of
from ..test_calibrations import PUMP

STIRRING = """\
calibration_type: simple_stirring
calibration_name: stir-1
calibrated_on_pioreactor_unit: pio1
created_at: 2026-01-05T12:00:00Z
curve_data_: {type: poly, coefficients: [20.0, 100.0]}
recorded_data: {x: [20.0, 80.0], y: [500.0, 1700.0]}
pwm_hz: 200.0
voltage: 5.0
"""

ESTIMATOR = """\
estimator_type: od_fused_estimator
estimator_name: fused-1
calibrated_on_pioreactor_unit: pio1
created_at: 2026-01-05 12:00:00+00:00
angles: ["45", "90"]
"""


def pump(name: str = "media-1", **changes: str) -> str:
    """PUMP with its name and ``field: value`` lines replaced (an empty value drops the line) or added."""
    changes_given = dict(changes)
    lines = []
    for line in PUMP.replace("media-1", name).splitlines():
        key = line.split(":", 1)[0]
        if key not in changes:
            lines.append(line)
        elif changes.pop(key):
            lines.append(f"{key}: {changes_given[key]}")
    lines += [f"{key}: {value}" for key, value in changes.items()]
    return "\n".join(lines) + "\n"


class CalibrationsApiTestCase(TestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.cache = PersistentCache(self.data_dir / "cache.json", reactor)
        self.addCleanup(self.cache.close)
        self.limits = Limits.defaults()
        self.stub = self.stub_for(self.limits)
        self.root = self.data_dir / "storage" / "calibrations"

    def stub_for(self, limits: Limits) -> StubTreq:
        return StubTreq(
            Router([CalibrationsApi(self.data_dir, self.cache, "pio1", limits)])
        )

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        code, body = await request(self.stub, method, path, **kwargs)
        self.assertEqual(code, expect, body)
        return body

    async def error(
        self, method: str, path: str, status: int, *mentions: str, **kwargs: Any
    ) -> dict[str, Any]:
        body = await self.call(method, path, status, **kwargs)
        text = f"{body['error']} {body['cause']}"
        for mention in mentions:
            self.assertIn(mention, text)
        if status != 500:
            self.assertIn("remediation", body)
        return body

    async def create(
        self, device: str, text: str, expect: int = 201, **more: Any
    ) -> Any:
        return await self.call(
            "POST",
            f"/unit_api/calibrations/{device}",
            expect,
            json={"calibration_data": text, **more},
        )

    async def zipped(self, stub: StubTreq | None = None) -> tuple[Any, bytes]:
        stub = stub or self.stub
        response = await response_of(stub, "GET", "/unit_api/zipped_calibrations")
        content = response.content()
        stub.flush()
        return response, await content

    def zip_names(self, answer: tuple[Any, bytes]) -> list[str]:
        response, content = answer
        self.assertEqual(response.code, 200, content)
        return sorted(zipfile.ZipFile(io.BytesIO(content)).namelist())

    def place(self, relative: str, text: str) -> Path:
        path = self.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


class CreateTests(CalibrationsApiTestCase):
    async def test_a_valid_file_is_stored_as_sent_and_listed(self) -> None:
        created = await self.create("media_pump", PUMP)
        path = self.root / "media_pump" / "media-1.yaml"
        self.assertEqual(
            created, {"msg": "Calibration created successfully.", "path": str(path)}
        )
        self.assertEqual(path.read_text(encoding="utf-8"), PUMP)
        self.assertEqual(
            list(path.parent.iterdir()), [path]
        )  # no temporary left behind
        one = await self.call("GET", "/unit_api/calibrations/media_pump/media-1", 200)
        self.assertEqual(one["created_at"], "2026-01-05T12:00:00Z")
        self.assertEqual(
            (one["hz"], one["voltage"], one["is_active"], one["pioreactor_unit"]),
            (250.0, 12.1, False, "pio1"),
        )
        self.assertEqual(
            one["curve_data_"], {"type": "poly", "coefficients": [0.0912, 0.0]}
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/calibrations/media_pump", 200), [one]
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/calibrations", 200), {"media_pump": [one]}
        )
        self.assertEqual(self.cache.items("active_calibrations"), {})

    async def test_default_axis_labels_and_a_second_device(self) -> None:
        await self.create("stirring", STIRRING)
        one = await self.call("GET", "/unit_api/calibrations/stirring/stir-1", 200)
        self.assertEqual((one["x"], one["y"]), ("DC %", "RPM"))
        await self.create("media_pump", PUMP)
        self.assertEqual(
            sorted(await self.call("GET", "/unit_api/calibrations", 200)),
            ["media_pump", "stirring"],
        )

    async def test_set_as_active_is_what_a_job_loads(self) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        calibration = await active_calibration(self.data_dir, self.cache, "media_pump")
        assert calibration is not None
        self.assertEqual(calibration.calibration_name, "media-1")
        self.assertAlmostEqual(calibration.x_to_y(10.0), 0.912)
        active = await self.call("GET", "/unit_api/active_calibrations", 200)
        self.assertEqual(list(active), ["media_pump"])
        self.assertTrue(active["media_pump"]["is_active"])

    async def test_overwriting_keeps_one_file(self) -> None:
        await self.create("media_pump", PUMP)
        await self.create("media_pump", pump(hz="300.0"))
        self.assertEqual(
            (await self.call("GET", "/unit_api/calibrations/media_pump/media-1", 200))[
                "hz"
            ],
            300.0,
        )

    async def test_bad_files_are_400_naming_the_problem_and_nothing_is_written(
        self,
    ) -> None:
        cases = {
            "not: [valid": "not valid YAML",
            "- a list": "mapping",
            pump(hz=""): "missing field hz",
            pump(voltage=""): "missing field voltage",
            pump(calibration_type=""): "missing field calibration_type",
            pump(calibration_type="telepathy"): "unknown calibration_type",
            pump(dc="-5"): "dc must be >= 0",
            pump(dc="0"): "dc must be a duty cycle in percent, more than 0 and at most 100",
            pump(dc="150"): "dc must be a duty cycle in percent, more than 0 and at most 100",
            pump(hz="fast"): "hz must be a number",
            pump(created_at="2026-01-05 12:00:00"): "timezone",
            pump(created_at=""): "created_at",
            pump(calibrated_on_pioreactor_unit=""): "calibrated_on_pioreactor_unit",
            pump(recorded_data="{x: [1.0, 2.0], y: [1.0]}"): "same length",
            pump(recorded_data="{x: [1.0], y: [one]}"): "recorded_data.y",
            pump(curve_data_="{type: cubic}"): "curve_data_",
            pump(x="[1, 2]"): "axis label",
            pump("../escape"): "calibration_name",
            pump(".hidden"): "calibration_name",
            pump("a/b"): "calibration_name",
            STIRRING: "media_pump takes a simple_peristaltic_pump calibration",
            pump(extra="&a [1, 2]\nmore: *a"): "aliases",
        }
        for text, mention in cases.items():
            with self.subTest(mention=mention):
                await self.error(
                    "POST",
                    "/unit_api/calibrations/media_pump",
                    400,
                    mention,
                    json={"calibration_data": text},
                )
        self.assertFalse(self.root.exists())

    async def test_od_fields(self) -> None:
        od = (
            "calibration_type: od\ncalibration_name: od90-1\ncalibrated_on_pioreactor_unit: pio1\n"
            "created_at: 2026-01-05 12:00:00+00:00\ncurve_data_: {type: poly, coefficients: [0.5, 0.0]}\n"
            "recorded_data: {x: [0.0, 1.0], y: [0.0, 0.5]}\nir_led_intensity: 80.0\npd_channel: '2'\n"
        )
        await self.error(
            "POST",
            "/unit_api/calibrations/od90",
            400,
            "missing field angle",
            json={"calibration_data": od},
        )
        await self.error(
            "POST",
            "/unit_api/calibrations/od90",
            400,
            "angle must be one of",
            json={"calibration_data": od + "angle: '60'\n"},
        )
        await self.create("od90", od + "angle: '90'\n")
        # A plugin's device takes any known type.
        await self.create("my_plugin_device", od + "angle: '90'\n")

    async def test_bad_bodies_and_devices(self) -> None:
        path = "/unit_api/calibrations/media_pump"
        await self.error("POST", path, 400, "calibration_data", json={})
        await self.error("POST", path, 400, json={"calibration_data": PUMP, "extra": 1})
        await self.error("POST", path, 400, json={"calibration_data": 5})
        await self.error(
            "POST", path, 400, json={"calibration_data": PUMP, "set_as_active": "yes"}
        )
        for device in ("..", ".hidden", "-x", "a%20%20b"):
            with self.subTest(device=device):
                await self.error(
                    "POST",
                    f"/unit_api/calibrations/{device}",
                    400,
                    "Missing or invalid 'device'.",
                    json={"calibration_data": PUMP},
                )
        self.assertFalse(self.root.exists())
        self.assertFalse((self.data_dir / "storage" / "media-1.yaml").exists())


class ReadTests(CalibrationsApiTestCase):
    async def test_nothing_yet(self) -> None:
        self.assertEqual(await self.call("GET", "/unit_api/calibrations", 200), {})
        self.assertEqual(
            await self.call("GET", "/unit_api/active_calibrations", 200), {}
        )
        await self.error(
            "GET",
            "/unit_api/calibrations/media_pump",
            404,
            "Calibration directory does not exist.",
        )
        await self.error(
            "GET", "/unit_api/calibrations/media_pump/media-1", 404, "media-1"
        )
        await self.error("GET", "/unit_api/zipped_calibrations", 404, "no calibrations")

    async def test_unknown_name_on_a_known_device(self) -> None:
        await self.create("media_pump", PUMP)
        body = await self.error(
            "GET",
            "/unit_api/calibrations/media_pump/other",
            404,
            "Calibration file does not exist.",
        )
        self.assertIn("GET /unit_api/calibrations/media_pump", body["remediation"])

    async def test_bad_names_are_400(self) -> None:
        for path in (
            "/unit_api/calibrations/%2E%2E",
            "/unit_api/calibrations/%2E%2E/media-1",
            "/unit_api/calibrations/media_pump/%2Ehidden",
            "/unit_api/calibrations/media_pump/-x",
        ):
            with self.subTest(path=path):
                await self.error("GET", path, 400, "Missing or invalid")

    async def test_traversal_reaches_nothing_outside(self) -> None:
        self.place("storage/media-1.yaml", PUMP)  # where device ".." would lead
        self.place("storage/calibrations/media_pump/keep.yaml", pump("keep"))
        await self.error(
            "GET", "/unit_api/calibrations/%2E%2E/media-1", 400, "'device'"
        )
        code, _ = await request(
            self.stub, "GET", "/unit_api/calibrations/media_pump/..%2F..%2Fmedia-1"
        )
        self.assertIn(code, (400, 404))
        code, _ = await request(
            self.stub, "DELETE", "/unit_api/calibrations/media_pump/..%2F..%2Fmedia-1"
        )
        self.assertIn(code, (400, 404))
        self.assertTrue((self.data_dir / "storage" / "media-1.yaml").exists())

    async def test_a_symlink_out_of_the_root_is_not_followed(self) -> None:
        outside = self.place("elsewhere/secret.yaml", pump("secret"))
        folder = self.root / "media_pump"
        folder.mkdir(parents=True)
        (folder / "secret.yaml").symlink_to(outside.resolve())
        (self.root / "linked").symlink_to(
            outside.parent.resolve(), target_is_directory=True
        )
        self.place("storage/calibrations/media_pump/media-1.yaml", PUMP)
        await self.error("GET", "/unit_api/calibrations/media_pump/secret", 404)
        names = [
            c["calibration_name"]
            for c in await self.call("GET", "/unit_api/calibrations/media_pump", 200)
        ]
        self.assertEqual(names, ["media-1"])
        self.assertEqual(
            list(await self.call("GET", "/unit_api/calibrations", 200)), ["media_pump"]
        )
        await self.error(
            "PATCH", "/unit_api/active_calibrations/media_pump/secret", 404
        )
        self.assertEqual(
            self.zip_names(await self.zipped()), ["media_pump/media-1.yaml"]
        )
        await self.error("DELETE", "/unit_api/calibrations/media_pump/secret", 404)
        self.assertTrue(outside.exists())
        self.assertTrue((folder / "secret.yaml").is_symlink())

    async def test_a_corrupt_file_is_skipped_in_lists_and_500_alone(self) -> None:
        self.place("storage/calibrations/media_pump/media-1.yaml", PUMP)
        self.place("storage/calibrations/media_pump/broken.yaml", "calibration_type: [")
        self.place("storage/calibrations/media_pump/notes.txt", "not a calibration")
        names = [
            c["calibration_name"]
            for c in await self.call("GET", "/unit_api/calibrations/media_pump", 200)
        ]
        self.assertEqual(names, ["media-1"])
        body = await self.error(
            "GET",
            "/unit_api/calibrations/media_pump/broken",
            500,
            "Failed to read calibration file.",
        )
        self.assertIn(
            "DELETE /unit_api/calibrations/media_pump/broken", body["remediation"]
        )

    async def test_reads_may_be_cached_briefly(self) -> None:
        await self.create("media_pump", PUMP)
        for path in (
            "/unit_api/calibrations",
            "/unit_api/calibrations/media_pump",
            "/unit_api/calibrations/media_pump/media-1",
            "/unit_api/active_calibrations",
            "/unit_api/estimators",
        ):
            response = await response_of(self.stub, "GET", path)
            self.assertEqual(
                response.headers.getRawHeaders(b"cache-control"),
                [b"public, max-age=10"],
                path,
            )


class ActiveTests(CalibrationsApiTestCase):
    async def test_activate_then_a_job_loads_it(self) -> None:
        await self.create("media_pump", PUMP)
        self.assertEqual(
            await self.call(
                "PATCH", "/unit_api/active_calibrations/media_pump/media-1", 200
            ),
            {"status": "success"},
        )
        calibration = await active_calibration(self.data_dir, self.cache, "media_pump")
        assert calibration is not None
        self.assertEqual(calibration.calibration_name, "media-1")
        one = await self.call("GET", "/unit_api/calibrations/media_pump/media-1", 200)
        self.assertTrue(one["is_active"])
        # The pointer is on disk: a restarted unit still uses it.
        await self.cache.flush()
        reopened = PersistentCache(self.data_dir / "cache.json", reactor)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.get("active_calibrations", "media_pump"), "media-1")

    async def test_deactivate_is_idempotent(self) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        for _ in range(2):
            self.assertEqual(
                await self.call(
                    "DELETE", "/unit_api/active_calibrations/media_pump", 200
                ),
                {"status": "success"},
            )
        self.assertIsNone(
            await active_calibration(self.data_dir, self.cache, "media_pump")
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/active_calibrations", 200), {}
        )
        await self.error(
            "DELETE", "/unit_api/active_calibrations/%2E%2E", 400, "'device'"
        )

    async def test_activating_what_is_not_there_or_unusable_changes_nothing(
        self,
    ) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        await self.error(
            "PATCH", "/unit_api/active_calibrations/media_pump/other", 404, "other"
        )
        await self.error(
            "PATCH", "/unit_api/active_calibrations/waste_pump/media-1", 404
        )
        self.place("storage/calibrations/media_pump/broken.yaml", pump("broken", hz=""))
        await self.error(
            "PATCH",
            "/unit_api/active_calibrations/media_pump/broken",
            409,
            "missing field hz",
        )
        await self.error(
            "PATCH",
            "/unit_api/active_calibrations/media_pump/%2E%2E",
            400,
            "'calibration_name'",
        )
        self.assertEqual(
            self.cache.items("active_calibrations"), {"media_pump": "media-1"}
        )

    async def test_an_unreadable_active_file_is_left_out(self) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        (self.root / "media_pump" / "media-1.yaml").write_text(
            "calibration_type: [", encoding="utf-8"
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/active_calibrations", 200), {}
        )


class DeleteTests(CalibrationsApiTestCase):
    async def test_deleting_the_active_one_clears_its_pointer(self) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        await self.create("media_pump", pump("media-2"))
        body = await self.call(
            "DELETE", "/unit_api/calibrations/media_pump/media-1", 200
        )
        self.assertEqual(
            body,
            {
                "msg": "Calibration 'media-1' for device 'media_pump' deleted successfully."
            },
        )
        self.assertFalse((self.root / "media_pump" / "media-1.yaml").exists())
        self.assertIsNone(
            await active_calibration(self.data_dir, self.cache, "media_pump")
        )
        self.assertEqual(self.cache.items("active_calibrations"), {})

    async def test_deleting_another_keeps_the_pointer(self) -> None:
        await self.create("media_pump", PUMP, set_as_active=True)
        await self.create("media_pump", pump("media-2"))
        await self.call("DELETE", "/unit_api/calibrations/media_pump/media-2", 200)
        self.assertEqual(
            self.cache.items("active_calibrations"), {"media_pump": "media-1"}
        )

    async def test_unknown_and_bad_names(self) -> None:
        await self.error(
            "DELETE", "/unit_api/calibrations/media_pump/media-1", 404, "media-1"
        )
        await self.error(
            "DELETE", "/unit_api/calibrations/%2E%2E/media-1", 400, "'device'"
        )
        await self.error(
            "DELETE",
            "/unit_api/calibrations/media_pump/%2Ex",
            400,
            "'calibration_name'",
        )


class ZipTests(CalibrationsApiTestCase):
    async def test_every_file_as_stored(self) -> None:
        await self.create("media_pump", PUMP)
        await self.create("stirring", STIRRING)
        self.place("storage/calibrations/stirring/notes.txt", "left out")
        response, content = answer = await self.zipped()
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/zip"]
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"content-disposition"),
            [b'attachment; filename="pio1_calibrations.zip"'],
        )
        self.assertEqual(
            self.zip_names(answer), ["media_pump/media-1.yaml", "stirring/stir-1.yaml"]
        )
        self.assertEqual(
            zipfile.ZipFile(io.BytesIO(content))
            .read("media_pump/media-1.yaml")
            .decode(),
            PUMP,
        )

    async def test_bounded_by_the_limits(self) -> None:
        await self.create("media_pump", PUMP)
        await self.create("media_pump", pump("media-2"))
        small = self.stub_for(evolve(self.limits, zip_entries=1))
        response, content = await self.zipped(small)
        self.assertEqual(response.code, 413, content)
        self.assertIn(b"zip_entries", content)


class EstimatorTests(CalibrationsApiTestCase):
    async def test_missing_root_and_device_are_empty(self) -> None:
        self.assertEqual(await self.call("GET", "/unit_api/estimators", 200), {})
        self.assertEqual(
            await self.call("GET", "/unit_api/estimators/od_fused", 200), []
        )
        self.assertEqual(await self.call("GET", "/unit_api/active_estimators", 200), {})
        await self.error(
            "GET",
            "/unit_api/estimators/od_fused/fused-1",
            404,
            "Estimator 'fused-1' not found for device 'od_fused'.",
        )
        await self.error("GET", "/unit_api/estimators/%2E%2E", 400, "'device'")
        await self.error(
            "GET", "/unit_api/estimators/od_fused/%2E%2E", 400, "'estimator_name'"
        )

    async def test_list_activate_and_delete(self) -> None:
        self.place("storage/estimators/od_fused/fused-1.yaml", ESTIMATOR)
        self.place(
            "storage/estimators/od_fused/broken.yaml", "estimator_name: fused-2\n"
        )  # no estimator_type
        one = await self.call("GET", "/unit_api/estimators/od_fused/fused-1", 200)
        self.assertEqual(
            (
                one["device"],
                one["is_active"],
                one["pioreactor_unit"],
                one["created_at"],
            ),
            ("od_fused", False, "pio1", "2026-01-05T12:00:00Z"),
        )
        self.assertEqual(
            await self.call("GET", "/unit_api/estimators", 200), {"od_fused": [one]}
        )
        await self.error(
            "GET", "/unit_api/estimators/od_fused/broken", 500, "estimator_type"
        )
        await self.error("PATCH", "/unit_api/active_estimators/od_fused/broken", 409)
        await self.error("PATCH", "/unit_api/active_estimators/od_fused/missing", 404)
        self.assertEqual(
            await self.call(
                "PATCH", "/unit_api/active_estimators/od_fused/fused-1", 200
            ),
            {"status": "success"},
        )
        active = await self.call("GET", "/unit_api/active_estimators", 200)
        self.assertEqual(
            active,
            {
                "od_fused": {
                    **{k: v for k, v in one.items() if k != "device"},
                    "is_active": True,
                }
            },
        )
        self.assertEqual(self.cache.items("active_calibrations"), {})
        body = await self.call("DELETE", "/unit_api/estimators/od_fused/fused-1", 200)
        self.assertEqual(
            body,
            {"msg": "Estimator 'fused-1' for device 'od_fused' deleted successfully."},
        )
        self.assertEqual(self.cache.items("active_estimators"), {})
        await self.error("DELETE", "/unit_api/estimators/od_fused/fused-1", 404)

    async def test_deactivate_is_idempotent(self) -> None:
        self.place("storage/estimators/od_fused/fused-1.yaml", ESTIMATOR)
        await self.call("PATCH", "/unit_api/active_estimators/od_fused/fused-1", 200)
        for _ in range(2):
            await self.call("DELETE", "/unit_api/active_estimators/od_fused", 200)
        self.assertEqual(self.cache.items("active_estimators"), {})
        await self.error("DELETE", "/unit_api/active_estimators/-x", 400)


class DocumentTests(CalibrationsApiTestCase):
    def test_the_zip_is_declared_as_a_zip(self) -> None:
        routes = route_table(
            [CalibrationsApi(self.data_dir, self.cache, "pio1", self.limits)]
        )
        paths = document(routes, "/unit_api", self.limits, "unit")["paths"]
        answer = paths["/unit_api/zipped_calibrations"]["get"]["responses"]["200"][
            "content"
        ]
        self.assertEqual(list(answer), ["application/zip"])
        created = paths["/unit_api/calibrations/{device}"]["post"]["responses"]["201"][
            "content"
        ]
        self.assertEqual(list(created), ["application/json"])
