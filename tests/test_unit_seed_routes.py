"""Issue 5's proof: every route of the unit seed's index answers as documented, on a worker of a
local cluster (real sockets, a real broker, a simulated Pioreactor, harmless system commands).

Expectations are the reference's (shared/reference/unit_api.md) except where
docs/api-deviations.md says we differ on purpose; those places cite the deviation.
Every request goes through ``hit``, which records the (method, route) it exercised, and the
test ends by comparing those with the seed's index (tests/data/unit_seed_index.txt, copied from
the seed), so no route can be left out silently.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance import __version__

from .cluster import ClusterTestCase, route_index

WORKER = "worker1"
EXP = "exp1"
INDEX = Path(__file__).parent / "data" / "unit_seed_index.txt"
ROW_KEYS = {
    "job_id",
    "unit",
    "experiment",
    "job_name",
    "job_source",
    "started_at",
    "is_running",
    "leader",
    "pid",
    "is_long_running_job",
    "ended_at",
}
HISTORY_KEYS = [
    "job_id",
    "job_name",
    "experiment",
    "job_source",
    "unit",
    "started_at",
    "ended_at",
]
BIOREACTOR_KEYS = {
    "current_volume_ml",
    "efflux_tube_volume_ml",
    "alt_media_fraction",
    "cumulative_media_added_ml",
    "cumulative_alt_media_added_ml",
    "cumulative_waste_removed_ml",
}
STIRRING_CALIBRATION = (
    "calibration_type: simple_stirring\n"
    "calibration_name: stir-1\n"
    f"calibrated_on_pioreactor_unit: {WORKER}\n"
    "created_at: 2026-01-05 12:00:00+00:00\n"
    "curve_data_: {type: poly, coefficients: [10.0, 0.0]}\n"
    "x: DC %\n"
    "y: RPM\n"
    "recorded_data: {x: [20.0, 40.0], y: [200.0, 400.0]}\n"
    "pwm_hz: 200.0\n"
    "voltage: 5.0\n"
)
ESTIMATOR = (
    "estimator_type: od_fused_estimator\n"
    "estimator_name: est-1\n"
    f"calibrated_on_pioreactor_unit: {WORKER}\n"
    "created_at: 2026-01-05 12:00:00+00:00\n"
    "angles: ['45', '90']\n"
)


def seed_index() -> set[tuple[str, str]]:
    """The seed's 71 (method, path) pairs."""
    return route_index(INDEX)


class UnitSeedRouteTests(ClusterTestCase):
    timeout = 90
    hit_unit = WORKER

    def test_index_is_the_seeds(self) -> None:
        index = seed_index()
        self.assertEqual(len(index), 71)
        self.assertTrue(all(path.startswith("/unit_api/") for _, path in index))

    async def test_every_seed_route_answers_as_documented(self) -> None:
        # start_cluster writes HARMLESS_SYSTEM into every unit's config.ini already.
        await self.start_cluster([WORKER], simulated=True)
        self.root = Path(
            (await self.hit("GET", "/unit_api/system/path/", 200))["current"]
        )
        for family in (
            self.health_and_versions,
            self.config,
            self.clock_and_status,
            self.power_and_update,
            self.files,
            self.jobs,
            self.bioreactor,
            self.descriptors,
            self.plugins,
            self.calibrations,
            self.estimators,
            self.backup_and_restore,
        ):
            await family()
        self.assertEqual(
            sorted(seed_index() - self.hits), [], "seed routes this test never called"
        )
        self.assertEqual(
            sorted(self.hits - seed_index()),
            [],
            "routes called that are not in the seed",
        )

    # --- helpers -------------------------------------------------------------------

    async def done(self, accepted: Any, unit: str = WORKER) -> Any:
        """The task a 202 started, followed to its end through the unit's task_results route; its result."""
        self.assertEqual(
            set(accepted), {"unit", "task_id", "result_url_path", "status"}
        )
        # docs/architecture.md: the envelope's status is the task's status word, not "accepted".
        self.assertEqual(accepted["unit"], unit)
        self.assertEqual(
            accepted["result_url_path"], f"/unit_api/task_results/{accepted['task_id']}"
        )
        self.hits.add(("GET", "/unit_api/task_results/{task_id}"))
        body = await self.wait_for_result(accepted, unit)
        self.assertEqual(body["status"], "succeeded", body)
        self.assertEqual(
            (body["task_id"], body["result_url_path"]),
            (accepted["task_id"], accepted["result_url_path"]),
        )
        return body["result"]

    # --- §2 A -----------------------------------------------------------------------

    async def health_and_versions(self) -> None:
        for unit in (WORKER, "leader"):
            health = await self.hit("GET", "/unit_api/health", 200, unit=unit)
            self.assertEqual(
                (health["status"], health["pioreactor_unit"]), ("ok", unit)
            )
            self.assertRegex(
                health["utc_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
            )
            # api-deviations "Health": a parts object is added.
            self.assertTrue(
                all(set(part) == {"ok", "state"} for part in health["parts"].values())
            )
        self.assertEqual(
            await self.hit("GET", "/unit_api/versions/app", 200),
            {"version": __version__},
        )
        for method in ("POST", "PATCH"):
            accepted = await self.hit(
                method,
                "/unit_api/hardware/check",
                202,
                json={"model_name": "pioreactor_20ml", "model_version": "1.1"},
            )
            result = await self.done(accepted)
            self.assertEqual(
                result,
                {"status": "ok"},
                "the simulated HAT has every chip the model needs",
            )
        unknown = await self.error(
            "POST",
            "/unit_api/hardware/check",
            400,
            json={"model_name": "pioreactor_20ml", "model_version": "9"},
        )
        self.assertEqual(
            unknown["error"], "Model name or version not found in available models."
        )
        await self.error(
            "POST",
            "/unit_api/hardware/check",
            400,
            json={"model_name": "pioreactor_20ml"},
        )

    # --- §2 B -----------------------------------------------------------------------

    async def config(self) -> None:
        self.assertEqual(
            await self.hit("GET", "/unit_api/config/specific", 200, media="text/plain"),
            b"",
        )
        for method, hz in (("PATCH", "300"), ("POST", "310")):
            code = f"[stirring.config]\npwm_hz={hz}\n"
            changed = await self.hit(
                method, "/unit_api/config/specific", 200, json={"code": code}
            )
            # api-deviations "Config": restart_required and message are added.
            self.assertEqual(changed["status"], "success")
            self.assertIsInstance(changed["restart_required"], bool)
            self.assertIsInstance(changed["message"], str)
            self.assertEqual(
                await self.hit(
                    "GET", "/unit_api/config/specific", 200, media="text/plain"
                ),
                code.encode(),
            )
            merged = await self.hit("GET", "/unit_api/config/merged", 200)
            self.assertEqual(merged["stirring.config"]["pwm_hz"], hz)
            self.assertTrue(
                all(
                    isinstance(v, str)
                    for section in merged.values()
                    for v in section.values()
                )
            )
        self.assertEqual(merged["cluster.topology"]["leader_hostname"], "leader")
        bad = await self.error(
            "PATCH", "/unit_api/config/specific", 400, json={"code": "[a]\nx=1\n[a]\n"}
        )
        self.assertEqual(bad["error"], "Incorrect syntax in the config.")
        await self.error(
            "POST", "/unit_api/config/specific", 400, json={"text": "[a]\n"}
        )
        self.assertEqual(
            await self.hit("GET", "/unit_api/config/specific", 200, media="text/plain"),
            b"[stirring.config]\npwm_hz=310\n",
        )

    # --- §2 C -----------------------------------------------------------------------

    async def clock_and_status(self) -> None:
        clock = await self.hit("GET", "/unit_api/system/utc_clock", 200)
        self.assertEqual(clock["status"], "success")
        self.assertRegex(clock["clock_time"], r"Z$")
        for method in ("PATCH", "POST"):
            accepted = await self.hit(
                method,
                "/unit_api/system/utc_clock",
                202,
                json={"utc_clock_time": "2026-01-05T12:00:00.000Z"},
            )
            self.assertIs(await self.done(accepted), True)
        bad = await self.error(
            "POST",
            "/unit_api/system/utc_clock",
            400,
            json={"utc_clock_time": "2026-01-05T12:00:00+02:00"},
        )
        self.assertEqual(bad["error"], "Invalid utc_clock_time format. Use ISO 8601.")
        # api-deviations "System commands": web_server/status is served on every unit.
        status = await self.hit("GET", "/unit_api/system/web_server/status", 200)
        self.assertEqual(
            status,
            {
                "service": "pioreactor.service",
                "state": "ready",
                "raw_status": "pioreactor.service=active",
            },
        )
        for method, unit in (("POST", WORKER), ("PATCH", "leader")):
            accepted = await self.hit(
                method, "/unit_api/system/web_server/restart", 202, unit=unit
            )
            self.assertIs(await self.done(accepted, unit), True)

    async def power_and_update(self) -> None:
        """Reboot and shutdown share one rate limit per unit (1 per 15 s), and the update has its own
        (1 per 10 s): on each unit the first request runs and the second is refused at once with 429
        (api-deviations "System commands": 429 with Retry-After instead of a failed task)."""
        for unit, ran, limited in (
            (
                WORKER,
                ("POST", "/unit_api/system/reboot"),
                ("PATCH", "/unit_api/system/shutdown"),
            ),
            (
                "leader",
                ("POST", "/unit_api/system/shutdown"),
                ("PATCH", "/unit_api/system/reboot"),
            ),
            (
                WORKER,
                ("POST", "/unit_api/system/update"),
                ("PATCH", "/unit_api/system/update/{target}"),
            ),
            (
                "leader",
                ("PATCH", "/unit_api/system/update"),
                ("POST", "/unit_api/system/update/{target}"),
            ),
        ):
            self.assertIs(
                await self.done(await self.hit(*ran, 202, unit=unit, json={}), unit),
                True,
            )
            refused = await self.error(
                *limited, 429, unit=unit, json={}, params={"target": "app"}
            )
            self.assertIn("limited to one request per", refused["cause"])
            [retry_after] = self.last_headers.getRawHeaders(b"retry-after")
            self.assertGreaterEqual(int(retry_after), 1)
        wrong = await self.hit(
            "POST",
            "/unit_api/system/update/{target}",
            404,
            json={},
            params={"target": "firmware"},
        )
        self.assertEqual(wrong["error"], "Invalid target")
        await self.error(
            "POST",
            "/unit_api/system/update",
            400,
            json={"options": {"repo": "someone/fork"}},
        )

    async def files(self) -> None:
        listing = await self.hit("GET", "/unit_api/system/path/", 200)
        self.assertEqual(set(listing), {"current", "dirs", "files"})
        self.assertIn("storage", listing["dirs"])
        self.assertIn("config.ini", listing["files"])
        self.assertEqual(listing["dirs"], sorted(listing["dirs"]))
        notes = self.root / "notes"
        notes.mkdir()
        for name in ("a.txt", "b.txt"):
            (notes / name).write_text(f"hello {name}\n")
        inside = await self.hit(
            "GET", "/unit_api/system/path/{req_path}", 200, params={"req_path": "notes"}
        )
        self.assertEqual(
            inside, {"current": str(notes), "dirs": [], "files": ["a.txt", "b.txt"]}
        )
        text = await self.hit(
            "GET",
            "/unit_api/system/path/{req_path}",
            200,
            media="text/plain",
            params={"req_path": "notes/a.txt"},
        )
        self.assertEqual(text, b"hello a.txt\n")
        missing = await self.error(
            "GET",
            "/unit_api/system/path/{req_path}",
            404,
            params={"req_path": "notes/zzz"},
        )
        self.assertEqual(missing["error"], "Path not found.")
        for method, name in (("POST", "a.txt"), ("PATCH", "b.txt")):
            accepted = await self.hit(
                method,
                "/unit_api/system/remove_file",
                202,
                json={"filepath": f"notes/{name}"},
            )
            self.assertIs(await self.done(accepted), True)
            self.assertFalse((notes / name).exists())
        # api-deviations "Files": a missing file and a directory are refused at once.
        await self.error(
            "POST",
            "/unit_api/system/remove_file",
            404,
            json={"filepath": "notes/a.txt"},
        )
        await self.error(
            "PATCH", "/unit_api/system/remove_file", 400, json={"filepath": "notes"}
        )
        await self.error(
            "POST",
            "/unit_api/system/remove_file",
            403,
            json={"filepath": "../config.ini"},
        )

    # --- §2 D, E --------------------------------------------------------------------

    async def jobs(self) -> None:
        env = {"EXPERIMENT": EXP}
        for method, job, options in (
            ("POST", "stirring", {"target_rpm": 500}),
            ("PATCH", "od_reading", {"interval": 1}),
        ):
            accepted = await self.hit(
                method,
                "/unit_api/jobs/run/job_name/{job_name}",
                202,
                json={"options": options, "env": env},
                params={"job_name": job},
            )
            self.assertEqual(await self.done(accepted), {"ok": True})
        too_soon = await self.error(
            "POST",
            "/unit_api/jobs/run/job_name/{job_name}",
            429,
            json={"env": env},
            params={"job_name": "stirring"},
        )
        self.assertEqual(
            too_soon["error"], "Too many requests, please try again later."
        )
        # api-deviations "Jobs on a unit": an unknown job is 404, bad options 400.
        await self.error(
            "POST",
            "/unit_api/jobs/run/job_name/{job_name}",
            404,
            json={"env": env},
            params={"job_name": "nope"},
        )

        running = await self.hit("GET", "/unit_api/jobs/running", 200)
        self.assertTrue(all(set(row) == ROW_KEYS for row in running), running)
        self.assertEqual(
            sorted(row["job_name"] for row in running),
            ["monitor", "od_reading", "stirring"],
        )
        [stirring] = await self.hit(
            "GET",
            "/unit_api/jobs/running/{job_name}",
            200,
            params={"job_name": "stirring"},
        )
        self.assertEqual(
            (
                stirring["unit"],
                stirring["experiment"],
                stirring["job_source"],
                stirring["is_running"],
                stirring["ended_at"],
            ),
            (WORKER, EXP, "user", 1, None),
        )
        in_exp = await self.hit(
            "GET",
            "/unit_api/jobs/running/experiments/{experiment}",
            200,
            params={"experiment": EXP},
        )
        self.assertEqual(
            sorted(row["job_name"] for row in in_exp), ["od_reading", "stirring"]
        )
        [monitor] = await self.hit("GET", "/unit_api/long_running_jobs/running", 200)
        self.assertEqual(
            (monitor["job_name"], monitor["is_long_running_job"]), ("monitor", 1)
        )

        route = "/unit_api/jobs/settings/job_name/{job_name}"
        settings = (await self.hit("GET", route, 200, params={"job_name": "stirring"}))[
            "settings"
        ]
        self.assertEqual((settings["$state"], settings["target_rpm"]), ("ready", 500.0))
        one = await self.hit(
            "GET",
            route + "/setting/{setting}",
            200,
            params={"job_name": "stirring", "setting": "$state"},
        )
        self.assertEqual(one, {"$state": "ready"})
        missing = await self.error(
            "GET",
            route + "/setting/{setting}",
            404,
            params={"job_name": "stirring", "setting": "nope"},
        )
        self.assertEqual(missing["error"], "Setting not found.")
        # api-deviations "Jobs on a unit": the PATCH is implemented (the reference: 503).
        changed = await self.hit(
            "PATCH",
            route,
            200,
            json={"settings": {"target_rpm": 600}},
            params={"job_name": "stirring"},
        )
        self.assertEqual(changed["settings"]["target_rpm"], 600.0)
        target = await self.hit(
            "GET",
            route + "/setting/{setting}",
            200,
            params={"job_name": "stirring", "setting": "target_rpm"},
        )
        self.assertEqual(target, {"target_rpm": 600.0})
        await self.error(
            "PATCH",
            route,
            400,
            json={"settings": {"measured_rpm": 1}},
            params={"job_name": "stirring"},
        )
        await self.error("GET", route, 404, params={"job_name": "dosing_automation"})

        nothing = await self.error("PATCH", "/unit_api/jobs/stop", 400, json={})
        self.assertEqual(nothing["error"], "No job filter specified")
        for method, body in (
            ("POST", {"job_name": "od_reading", "experiment": EXP}),
            ("PATCH", {"job_id": 987654}),
        ):
            self.assertIs(
                await self.done(
                    await self.hit(method, "/unit_api/jobs/stop", 202, json=body)
                ),
                True,
            )
        for method in ("POST", "PATCH"):
            self.assertIs(
                await self.done(await self.hit(method, "/unit_api/jobs/stop/all", 202)),
                True,
            )
        await self.until_running(["monitor"])
        history = await self.hit("GET", "/unit_api/jobs", 200)
        self.assertTrue(all(list(row) == HISTORY_KEYS for row in history), history)
        self.assertEqual(
            [row["job_id"] for row in history],
            sorted((row["job_id"] for row in history), reverse=True),
        )
        ended = {row["job_name"]: row["ended_at"] for row in history}
        self.assertRegex(ended["stirring"], r"Z$")
        self.assertRegex(ended["od_reading"], r"Z$")

    async def until_running(self, names: list[str]) -> None:
        for _ in range(100):
            running = await self.hit("GET", "/unit_api/jobs/running", 200)
            if sorted(row["job_name"] for row in running) == names:
                return
            await self.pause(0.05)
        self.fail(f"still running: {running}")

    async def pause(self, seconds: float) -> None:
        await deferLater(reactor, seconds)

    # --- §2 F, G --------------------------------------------------------------------

    async def bioreactor(self) -> None:
        route = "/unit_api/bioreactor/experiments/{experiment}"
        values = (await self.hit("GET", route, 200, params={"experiment": EXP}))[
            "values"
        ]
        self.assertEqual(set(values), BIOREACTOR_KEYS)
        self.assertTrue(all(isinstance(v, float) for v in values.values()))
        changed = await self.hit(
            "PATCH",
            route,
            200,
            json={"values": {"current_volume_ml": 12.5}},
            params={"experiment": EXP},
        )
        self.assertEqual(changed, {"status": "success"})
        self.assertEqual(
            (await self.hit("GET", route, 200, params={"experiment": EXP}))["values"][
                "current_volume_ml"
            ],
            12.5,
        )
        empty = await self.error(
            "PATCH", route, 400, json={"values": {}}, params={"experiment": EXP}
        )
        self.assertEqual(empty["error"], "Missing bioreactor values.")
        # api-deviations "Jobs on a unit": all-or-nothing, the good entry before the bad one is not kept.
        await self.error(
            "PATCH",
            route,
            400,
            json={"values": {"current_volume_ml": 10.0, "alt_media_fraction": 2.0}},
            params={"experiment": EXP},
        )
        self.assertEqual(
            (await self.hit("GET", route, 200, params={"experiment": EXP}))["values"][
                "current_volume_ml"
            ],
            12.5,
        )

    async def descriptors(self) -> None:
        jobs = await self.hit("GET", "/unit_api/jobs/descriptors", 200)
        keys = {
            "display_name",
            "job_name",
            "display",
            "published_settings",
            "source",
            "description",
            "subtext",
            "is_testing",
        }
        self.assertTrue(jobs and all(set(job) == keys for job in jobs), jobs[:1])
        self.assertIn("stirring", {job["job_name"] for job in jobs})
        route = "/unit_api/automations/descriptors/{automation_type}"
        dosing = await self.hit("GET", route, 200, params={"automation_type": "dosing"})
        self.assertTrue(
            {"chemostat", "turbidostat"} <= {a["automation_name"] for a in dosing}
        )
        self.assertTrue(
            all(
                {"display_name", "automation_name", "description", "source", "fields"}
                <= set(a)
                for a in dosing
            )
        )
        for kind in ("temperature", "led"):
            self.assertTrue(
                await self.hit("GET", route, 200, params={"automation_type": kind})
            )
        bad = await self.error("GET", route, 400, params={"automation_type": "weather"})
        self.assertEqual(bad["error"], "Not a valid automation type")
        capabilities = await self.hit("GET", "/unit_api/capabilities", 200)
        [stirring] = [c for c in capabilities if c["job_name"] == "stirring"]
        self.assertTrue(
            {
                "job_name",
                "help",
                "arguments",
                "options",
                "published_settings",
                "cli_example",
            }
            <= set(stirring)
        )
        self.assertEqual(
            stirring["published_settings"]["$state"],
            {"datatype": "string", "settable": True},
        )
        self.assertIn("target_rpm", {option["name"] for option in stirring["options"]})

    # --- §2 H -----------------------------------------------------------------------

    async def plugins(self) -> None:
        installed = await self.hit("GET", "/unit_api/plugins/installed", 200)
        keys = {"name", "version", "description", "homepage", "source", "author"}
        self.assertTrue(all(set(plugin) == keys for plugin in installed), installed)
        (self.root / "plugins").mkdir(exist_ok=True)
        (self.root / "plugins" / "my_plugin.py").write_text(
            "__plugin_name__ = 'mine'\n"
        )
        route = "/unit_api/plugins/installed/{filename}"
        source = await self.hit(
            "GET", route, 200, media="text/plain", params={"filename": "my_plugin.py"}
        )
        self.assertEqual(source, b"__plugin_name__ = 'mine'\n")
        for name in ("my_plugin.txt", "absent.py"):
            wrong = await self.error("GET", route, 404, params={"filename": name})
            self.assertEqual(wrong["error"], "must provide a .py file")
        # [plugins] pip=true (HARMLESS_SYSTEM): pip "succeeds" without touching anything.
        for action in ("install", "uninstall"):
            for method in ("POST", "PATCH"):
                body = {"args": ["pioreactor-air-bubbler"]}
                self.assertIs(
                    await self.done(
                        await self.hit(
                            method, f"/unit_api/plugins/{action}", 202, json=body
                        )
                    ),
                    True,
                )
        none = await self.error(
            "POST", "/unit_api/plugins/install", 400, json={"args": []}
        )
        self.assertEqual(none["error"], "Plugin name is required")
        await self.error(
            "PATCH", "/unit_api/plugins/uninstall", 400, json={"args": ["a", "b"]}
        )
        await self.error(
            "POST",
            "/unit_api/plugins/install",
            400,
            json={"args": ["--index-url=http://evil"]},
        )

    # --- §2 I -----------------------------------------------------------------------

    async def calibrations(self) -> None:
        device = {"device": "stirring"}
        named = {"device": "stirring", "calibration_name": "stir-1"}
        created = await self.hit(
            "POST",
            "/unit_api/calibrations/{device}",
            201,
            json={"calibration_data": STIRRING_CALIBRATION},
            params=device,
        )
        self.assertEqual(created["msg"], "Calibration created successfully.")
        written = self.root / "storage" / "calibrations" / "stirring" / "stir-1.yaml"
        self.assertEqual(Path(created["path"]).resolve(), written.resolve())
        self.assertEqual(written.read_text(), STIRRING_CALIBRATION)
        # api-deviations "Calibrations": invalid YAML is 400, not 500.
        await self.error(
            "POST",
            "/unit_api/calibrations/{device}",
            400,
            json={"calibration_data": "calibration_type: [\n"},
            params=device,
        )
        everything = await self.hit("GET", "/unit_api/calibrations", 200)
        self.assertTrue(
            {"stirring", "media_pump", "alt_media_pump", "waste_pump"}
            <= set(everything)
        )
        [listed] = await self.hit(
            "GET", "/unit_api/calibrations/{device}", 200, params=device
        )
        one = await self.hit(
            "GET",
            "/unit_api/calibrations/{device}/{calibration_name}",
            200,
            params=named,
        )
        self.assertEqual(listed, one)
        self.assertEqual(
            (
                one["calibration_name"],
                one["is_active"],
                one["pioreactor_unit"],
                one["created_at"],
                one["pwm_hz"],
            ),
            ("stir-1", False, WORKER, "2026-01-05T12:00:00Z", 200.0),
        )
        route = "/unit_api/active_calibrations/{device}/{calibration_name}"
        self.assertEqual(
            await self.hit("PATCH", route, 200, params=named), {"status": "success"}
        )
        await self.error(
            "PATCH",
            route,
            404,
            params={"device": "stirring", "calibration_name": "absent"},
        )
        active = await self.hit("GET", "/unit_api/active_calibrations", 200)
        self.assertEqual(
            (active["stirring"]["calibration_name"], active["stirring"]["is_active"]),
            ("stir-1", True),
        )
        self.assertEqual(
            active["media_pump"]["calibration_name"], "simulated_media_pump"
        )
        archive = await self.hit(
            "GET", "/unit_api/zipped_calibrations", 200, media="application/zip"
        )
        self.assertIn(
            b"attachment", self.last_headers.getRawHeaders(b"content-disposition")[0]
        )
        self.assertIn(
            f"{WORKER}_calibrations.zip".encode(),
            self.last_headers.getRawHeaders(b"content-disposition")[0],
        )
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            self.assertIn("stirring/stir-1.yaml", z.namelist())
            self.assertEqual(
                z.read("stirring/stir-1.yaml").decode(), STIRRING_CALIBRATION
            )
        for _ in range(2):  # idempotent
            self.assertEqual(
                await self.hit(
                    "DELETE",
                    "/unit_api/active_calibrations/{device}",
                    200,
                    params=device,
                ),
                {"status": "success"},
            )
        self.assertNotIn(
            "stirring", await self.hit("GET", "/unit_api/active_calibrations", 200)
        )
        bad = await self.error(
            "DELETE",
            "/unit_api/active_calibrations/{device}",
            400,
            params={"device": ".hidden"},
        )
        self.assertEqual(bad["error"], "Missing or invalid 'device'.")
        deleted = await self.hit(
            "DELETE",
            "/unit_api/calibrations/{device}/{calibration_name}",
            200,
            params=named,
        )
        self.assertEqual(
            deleted,
            {"msg": "Calibration 'stir-1' for device 'stirring' deleted successfully."},
        )
        await self.error(
            "GET",
            "/unit_api/calibrations/{device}/{calibration_name}",
            404,
            params=named,
        )
        await self.error(
            "DELETE",
            "/unit_api/calibrations/{device}/{calibration_name}",
            404,
            params=named,
        )
        protocols = await self.hit("GET", "/unit_api/calibration_protocols", 200)
        keys = {
            "id",
            "target_device",
            "protocol_name",
            "priority",
            "title",
            "description",
            "requirements",
        }
        self.assertIsInstance(protocols, list)
        self.assertTrue(all(keys <= set(p) for p in protocols), protocols)

    async def estimators(self) -> None:
        self.assertEqual(
            await self.hit(
                "GET",
                "/unit_api/estimators/{device}",
                200,
                params={"device": "od_fused"},
            ),
            [],
        )
        folder = self.root / "storage" / "estimators" / "od_fused"
        folder.mkdir(parents=True)
        (folder / "est-1.yaml").write_text(ESTIMATOR)
        named = {"device": "od_fused", "estimator_name": "est-1"}
        everything = await self.hit("GET", "/unit_api/estimators", 200)
        [listed] = everything["od_fused"]
        self.assertEqual(
            (
                listed["estimator_name"],
                listed["is_active"],
                listed["pioreactor_unit"],
                listed["device"],
            ),
            ("est-1", False, WORKER, "od_fused"),
        )
        self.assertEqual(
            await self.hit(
                "GET",
                "/unit_api/estimators/{device}",
                200,
                params={"device": "od_fused"},
            ),
            [listed],
        )
        self.assertEqual(
            await self.hit(
                "GET",
                "/unit_api/estimators/{device}/{estimator_name}",
                200,
                params=named,
            ),
            listed,
        )
        missing = await self.error(
            "GET",
            "/unit_api/estimators/{device}/{estimator_name}",
            404,
            params={"device": "od_fused", "estimator_name": "x"},
        )
        self.assertEqual(
            missing["error"], "Estimator 'x' not found for device 'od_fused'."
        )
        route = "/unit_api/active_estimators/{device}/{estimator_name}"
        self.assertEqual(
            await self.hit("PATCH", route, 200, params=named), {"status": "success"}
        )
        await self.error(
            "PATCH", route, 404, params={"device": "od_fused", "estimator_name": "x"}
        )
        active = await self.hit("GET", "/unit_api/active_estimators", 200)
        self.assertEqual(
            (active["od_fused"]["estimator_name"], active["od_fused"]["is_active"]),
            ("est-1", True),
        )
        self.assertNotIn("device", active["od_fused"])
        self.assertEqual(
            await self.hit(
                "DELETE",
                "/unit_api/active_estimators/{device}",
                200,
                params={"device": "od_fused"},
            ),
            {"status": "success"},
        )
        self.assertEqual(await self.hit("GET", "/unit_api/active_estimators", 200), {})
        deleted = await self.hit(
            "DELETE",
            "/unit_api/estimators/{device}/{estimator_name}",
            200,
            params=named,
        )
        self.assertEqual(
            deleted,
            {"msg": "Estimator 'est-1' for device 'od_fused' deleted successfully."},
        )
        self.assertFalse((folder / "est-1.yaml").exists())

    # --- §2 J -----------------------------------------------------------------------

    async def backup_and_restore(self) -> None:
        archive = await self.hit(
            "GET", "/unit_api/zipped_dot_pioreactor", 200, media="application/zip"
        )
        self.assertIn(
            f"{WORKER}_dot_pioreactor.zip".encode(),
            self.last_headers.getRawHeaders(b"content-disposition")[0],
        )
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            names = z.namelist()
            metadata = json.loads(z.read("pioreactor_export_metadata.json"))
        self.assertIn("config.ini", names)
        self.assertIn("notes/", names)
        self.assertEqual(
            (
                metadata["metadata_version"],
                metadata["name"],
                metadata["leader_hostname"],
                metadata["is_leader"],
            ),
            (1, WORKER, "leader", False),
        )
        # api-deviations "Backup and restore": no SQLite files, no secrets.
        self.assertFalse([n for n in names if ".sqlite" in n])
        (self.root / "notes" / "after_export.txt").write_text("made after the export\n")
        accepted = await self.hit(
            "POST",
            "/unit_api/import_zipped_dot_pioreactor",
            202,
            files={
                "archive": (
                    f"{WORKER}_dot_pioreactor.zip",
                    "application/zip",
                    io.BytesIO(archive),
                )
            },
        )
        result = await self.done(accepted)
        # api-deviations "Backup and restore": a report instead of true, and the appliance (not the
        # Pi) restarts itself after [system] power_delay_seconds (a no-op here: HARMLESS_SYSTEM).
        self.assertEqual(
            set(result),
            {
                "replaced",
                "kept",
                "ignored",
                "backup",
                "restart_required",
                "restart_in_seconds",
            },
        )
        self.assertEqual(
            (result["restart_required"], result["restart_in_seconds"]), (True, 0.1)
        )
        self.assertIn("notes", result["replaced"])
        self.assertFalse((self.root / "notes" / "after_export.txt").exists())
        self.assertTrue(
            (Path(result["backup"]) / "notes" / "after_export.txt").exists()
        )
        elsewhere = await self.hit(
            "POST",
            "/unit_api/import_zipped_dot_pioreactor",
            400,
            unit="leader",
            files={
                "archive": (
                    f"{WORKER}_dot_pioreactor.zip",
                    "application/zip",
                    io.BytesIO(archive),
                )
            },
        )
        self.assertEqual(
            elsewhere["error"],
            f"Archive prepared for {WORKER}, cannot import into leader",
        )
        not_zip = await self.error(
            "POST",
            "/unit_api/import_zipped_dot_pioreactor",
            400,
            files={"archive": ("x.zip", "application/zip", io.BytesIO(b"not a zip"))},
        )
        self.assertEqual(not_zip["error"], "Uploaded file is not a valid zip archive")
        unknown = await self.error(
            "GET", "/unit_api/task_results/{task_id}", 404, params={"task_id": "nope"}
        )
        self.assertEqual(unknown["error"], "Task not found.")
