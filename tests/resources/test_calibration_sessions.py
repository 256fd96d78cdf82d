"""``/unit_api/calibrations/sessions...`` and ``/unit_api/calibration_protocols`` over HTTP, on a simulated Pioreactor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from treq.testing import StubTreq
from twisted.trial.unittest import TestCase

from pioreactor_appliance.calibration_files import CALIBRATIONS, read_file
from pioreactor_appliance.calibration_sessions.protocol import Bench, SessionSettings
from pioreactor_appliance.calibration_sessions.registry import core_protocols
from pioreactor_appliance.calibration_sessions.runner import CalibrationSessions
from pioreactor_appliance.calibration_sessions.session import NAMESPACE
from pioreactor_appliance.calibrations import ACTIVE_NAMESPACE, Calibration
from pioreactor_appliance.config import Config
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.od_reading import ODReader
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.stirring import Stirring
from pioreactor_appliance.resources.calibration_sessions import CalibrationSessionsApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.tasks import TaskRegistry

from ..helpers import request, response_of
from ..jobs.simulated import SimulatedUnit, simulated_unit

SESSIONS = "/unit_api/calibrations/sessions"
FAST = [
    ("calibration_sessions", "pump_durations_seconds", "1,2,3"),
    ("calibration_sessions", "stirring_duty_cycles", "10,40,70"),
    ("calibration_sessions", "stirring_settle_seconds", "4"),
    ("calibration_sessions", "stirring_measure_seconds", "2"),
    ("calibration_sessions", "od_settle_seconds", "0.2"),
]


class SessionsTestCase(TestCase):
    async def start(self, config: Config | None = None) -> None:
        config = config or Config.defaults().with_overrides(FAST)
        self.unit: SimulatedUnit = await simulated_unit(
            self,
            Registry({"stirring": Stirring, "od_reading": ODReader}),
            config=config,
        )
        self.tasks = TaskRegistry(self.unit.clock, "pio1", max_count=100, max_age=3600)
        self.cache = self.unit.manager.unit_state.cache
        bench = Bench(
            "pio1",
            self.unit.clock,
            config,
            self.unit.hardware,
            self.unit.manager,
            self.unit.data_dir,
            self.cache,
            SessionSettings.from_config(config),
        )
        self.stub = StubTreq(
            Router(
                [
                    CalibrationSessionsApi(
                        CalibrationSessions(bench, self.tasks, core_protocols(config))
                    )
                ]
            )
        )

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        code, body = await request(self.stub, method, path, **kwargs)
        self.assertEqual(code, expect, body)
        return body

    async def error(
        self, method: str, path: str, expect: int, message: str, **kwargs: Any
    ) -> None:
        body = await self.call(method, path, expect, **kwargs)
        self.assertEqual(body["error"], message)

    async def new(self, device: str, protocol: str) -> dict[str, Any]:
        return await self.call(
            "POST",
            SESSIONS,
            201,
            json={"target_device": device, "protocol_name": protocol, "extra": 1},
        )

    async def send(
        self, view: dict[str, Any], expect: int = 200, **inputs: Any
    ) -> dict[str, Any]:
        return await self.call(
            "POST",
            f"{SESSIONS}/{view['session']['session_id']}/inputs",
            expect,
            json={"inputs": inputs},
        )

    async def finish_action(
        self, view: dict[str, Any], limit: float = 120, edges: bool = False
    ) -> dict[str, Any]:
        """Let simulated time pass until the action step's task has ended; the session after."""
        self.assertEqual(view["step"]["step_type"], "action")
        self.assertIn("task", view["step"]["metadata"])
        session_id = view["session"]["session_id"]
        for _ in range(int(limit)):
            await self.unit.advance(1, step=0.5, edges=edges)
            view = await self.call("GET", f"{SESSIONS}/{session_id}", 200)
            if "pending_task_id" not in view["session"]["data"]:
                return view
        self.fail(f"the action of {view['step']['step_id']} did not end in {limit} s")

    def active(self, device: str) -> Calibration:
        name = self.cache.get(ACTIVE_NAMESPACE, device)
        self.assertIsNotNone(name, device)
        path = CALIBRATIONS.path(self.unit.data_dir, device, name)
        read_file(
            CALIBRATIONS, self.unit.data_dir, device, name
        )  # a valid file, as an upload would be checked
        return Calibration.from_text(path.read_text())


class PumpSessionTests(SessionsTestCase):
    async def test_a_full_session_saves_an_active_calibration_fitting_the_volumes(
        self,
    ) -> None:
        await self.start()
        view = await self.new("media_pump", "duration_based")
        self.assertEqual(view["step"]["step_id"], "intro")
        self.assertEqual(
            list(view["session"]),
            [
                "session_id",
                "protocol_name",
                "target_device",
                "status",
                "step_id",
                "data",
                "created_at",
                "updated_at",
                "result",
                "error",
            ],
        )
        self.assertTrue(view["session"]["created_at"].endswith("Z"))
        view = await self.send(view)
        self.assertEqual(
            (view["step"]["step_id"], [f["name"] for f in view["step"]["fields"]]),
            ("pwm_settings", ["hz", "dc"]),
        )
        await self.error(
            "POST",
            f"{SESSIONS}/{view['session']['session_id']}/inputs",
            400,
            "'hz' must be >= 0.1.",
            json={"inputs": {"hz": 0, "dc": 50}},
        )
        await self.error(
            "POST",
            f"{SESSIONS}/{view['session']['session_id']}/inputs",
            400,
            "Missing 'dc'.",
            json={"inputs": {"hz": 250}},
        )
        view = await self.send(view, hz="250", dc=80)
        self.assertEqual(view["step"]["step_id"], "tubing")
        volumes = {1.0: 0.95, 2.0: 1.85, 3.0: 2.8}  # about 0.92 ml/s
        view = await self.send(view)
        pump = self.unit.hardware.pumps["media"]
        for run, seconds in enumerate((1.0, 2.0, 3.0), start=1):
            self.assertEqual(view["step"]["step_id"], f"run_{run}")
            await self.unit.advance(0.5, step=0.25)
            self.assertEqual(pump.duty, 80)  # the answer came while the pump runs
            # Posting while the action runs changes nothing.
            again = await self.send(view, volume_ml=1)
            self.assertEqual(
                again["session"],
                (
                    await self.call(
                        "GET", f"{SESSIONS}/{view['session']['session_id']}", 200
                    )
                )["session"],
            )
            self.assertEqual(again["step"]["step_id"], f"run_{run}")
            view = await self.finish_action(view)
            self.assertEqual(pump.duty, 0)
            self.assertEqual(view["step"]["step_id"], f"volume_{run}")
            view = await self.send(view, volume_ml=volumes[seconds])
        self.assertEqual(view["step"]["step_id"], "review")
        self.assertEqual(
            view["step"]["metadata"]["chart"]["series"][0]["points"][0],
            {"x": 1.0, "y": 0.95},
        )
        view = await self.send(view)
        self.assertEqual(
            (view["session"]["status"], view["step"]["step_id"], view["step"]["title"]),
            ("complete", "complete", "Calibration complete!"),
        )
        [saved] = view["session"]["result"]["calibrations"]
        self.assertEqual(view["step"]["metadata"]["result"], view["session"]["result"])
        self.assertEqual(saved["device"], "media_pump")
        calibration = self.active("media_pump")
        self.assertEqual(calibration.calibration_name, saved["calibration_name"])
        self.assertEqual(
            (calibration.fields["hz"], calibration.fields["dc"]), (250.0, 80.0)
        )
        for seconds, ml in volumes.items():
            self.assertLess(abs(calibration.x_to_y(seconds) - ml), 0.03)
        # A finished session stays as it is.
        self.assertEqual(
            (await self.send(view, volume_ml=3))["session"], view["session"]
        )
        aborted = await self.call(
            "POST", f"{SESSIONS}/{view['session']['session_id']}/abort", 200
        )
        self.assertEqual(
            (
                aborted["session"]["status"],
                aborted["step"]["step_id"],
                aborted["step"]["title"],
            ),
            ("aborted", "", "Protocol ended"),
        )

    async def test_a_failed_run_shows_its_error_and_can_be_retried(self) -> None:
        await self.start()
        view = await self.new("media_pump", "duration_based")
        for inputs in ({}, {"hz": 250, "dc": 100}):
            view = await self.send(view, **inputs)
        pump = self.unit.hardware.pumps["media"]
        # Someone else's run: the session's must not start, nor stop it.
        await pump.run_for(5)
        view = await self.finish_action(await self.send(view))
        self.assertEqual(view["step"]["step_id"], "run_1")
        self.assertEqual(
            view["step"]["metadata"]["error"], "Pump run failed: media: already running"
        )
        self.assertIn("Pump run failed", view["step"]["body"])
        self.assertEqual(pump.duty, 100)
        await self.unit.advance(5)
        view = await self.send(view)  # the retry
        self.assertNotIn("error", view["step"]["metadata"])
        view = await self.finish_action(view)
        self.assertEqual(view["step"]["step_id"], "volume_1")

    async def test_abort_while_running_stops_the_pump(self) -> None:
        await self.start()
        view = await self.new("waste_pump", "duration_based")
        for inputs in ({}, {"hz": 250, "dc": 100}, {}):
            view = await self.send(view, **inputs)
        await self.unit.advance(0.2, step=0.1)
        pump = self.unit.hardware.pumps["waste"]
        self.assertEqual(pump.duty, 100)
        task_id = view["step"]["metadata"]["task"]["task_id"]
        view = await self.call(
            "POST", f"{SESSIONS}/{view['session']['session_id']}/abort", 200
        )
        await self.unit.settle()
        self.assertEqual(pump.duty, 0)
        self.assertEqual(
            (view["session"]["status"], view["session"]["error"]),
            ("aborted", "Calibration aborted by user."),
        )
        self.assertNotIn("pending_task_id", view["session"]["data"])
        self.assertEqual(self.tasks.get(task_id).status, "failed")
        self.assertEqual(
            self.cache.get(NAMESPACE, view["session"]["session_id"]), view["session"]
        )


class StirringSessionTests(SessionsTestCase):
    async def test_the_curve_rises_with_duty_cycle(self) -> None:
        await self.start()
        view = await self.new("stirring", "dc_based")
        view = await self.send(view)
        view = await self.finish_action(view, edges=True)
        self.assertEqual(view["step"]["step_id"], "review")
        self.assertEqual(self.unit.hardware.stirring.duty, 0)
        data = view["session"]["data"]
        # 10 % is below the motor's stall duty: it read 0 and is left out.
        self.assertEqual(data["dcs"], [40, 70])
        self.assertLess(data["rpms"][0], data["rpms"][1])
        view = await self.send(view)
        self.assertEqual(view["session"]["status"], "complete")
        calibration = self.active("stirring")
        self.assertGreater(calibration.curve.coefficients[0], 0)
        self.assertLess(abs(calibration.x_to_y(70) - data["rpms"][1]), 1)

    async def test_stirring_must_be_off(self) -> None:
        await self.start()
        await self.unit.manager.run(RunRequest("stirring", "exp1"))
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Stirring must be off before starting.",
            json={"target_device": "stirring", "protocol_name": "dc_based"},
        )
        self.assertEqual(self.cache.items(NAMESPACE), {})


class OdStandardsTests(SessionsTestCase):
    async def test_two_standards_give_an_active_od600_calibration(self) -> None:
        await self.start()
        protocols = await self.call("GET", "/unit_api/calibration_protocols", 200)
        self.assertIn("od90_standards", [p["id"] for p in protocols])
        view = await self.new("od90", "standards")
        view = await self.send(view)
        for od in (0.05, 1.0, 2.0):
            if od > 0.05:
                view = await self.send(view, another="yes")
            self.assertEqual(view["step"]["step_id"], "standard")
            view = await self.send(view, od600=od)
            self.unit.model.od = od
            view = await self.finish_action(view)
            self.assertEqual(view["step"]["step_id"], "another")
            if od == 0.05:
                await self.error(
                    "POST",
                    f"{SESSIONS}/{view['session']['session_id']}/inputs",
                    400,
                    "At least 2 standards are needed; measure another.",
                    json={"inputs": {"another": "n"}},
                )
        self.assertEqual(self.unit.hardware.leds.__class__.__name__, "Rp2040")
        # The IR LED is off between readings.
        self.assertEqual(self.unit.model.leds[0], 0)
        volts = [s["voltages"]["2"] for s in view["session"]["data"]["standards"]]
        self.assertLess(volts[0], volts[1])
        self.assertLess(volts[1], volts[2])
        view = await self.send(view, another=0)
        self.assertEqual(view["step"]["step_id"], "review")
        view = await self.send(view)
        self.assertEqual(
            [c["device"] for c in view["session"]["result"]["calibrations"]], ["od90"]
        )
        calibration = self.active("od90")
        self.assertEqual(
            (
                calibration.calibration_type,
                calibration.fields["angle"],
                calibration.fields["pd_channel"],
            ),
            ("od600", "90", "2"),
        )
        self.assertLess(abs(calibration.y_to_x(volts[1]) - 1.0), 0.05)


class BadInputTests(SessionsTestCase):
    async def test_create(self) -> None:
        await self.start()
        await self.error("POST", SESSIONS, 400, "Missing JSON payload.")
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Missing JSON payload.",
            data=b"[1]",
            headers={b"content-type": [b"application/json"]},
        )
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Missing JSON payload.",
            data=b"{nope",
            headers={b"content-type": [b"application/json"]},
        )
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Missing 'target_device'.",
            json={"protocol_name": "dc_based"},
        )
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Missing 'protocol_name'.",
            json={"target_device": "stirring", "protocol_name": 3},
        )
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Unknown protocol 'x' for target device 'stirring'.",
            json={"target_device": "stirring", "protocol_name": "x"},
        )
        await self.error(
            "POST",
            SESSIONS,
            400,
            "Unknown protocol 'standards' for target device 'od45'.",
            json={"target_device": "od45", "protocol_name": "standards"},
        )

    async def test_unknown_session(self) -> None:
        await self.start()
        for method, suffix in (("GET", ""), ("POST", "/inputs"), ("POST", "/abort")):
            await self.error(
                method,
                f"{SESSIONS}/nope{suffix}",
                404,
                "Calibration session not found.",
                json={},
            )

    async def test_inputs(self) -> None:
        await self.start()
        view = await self.new("alt_media_pump", "duration_based")
        path = f"{SESSIONS}/{view['session']['session_id']}/inputs"
        await self.error(
            "POST",
            path,
            400,
            "Invalid 'inputs', expected an object.",
            json={"inputs": [1]},
        )
        await self.error(
            "POST",
            path,
            400,
            "Missing JSON payload.",
            data=b"3",
            headers={b"content-type": [b"application/json"]},
        )
        # No body: no inputs, and the intro needs none.
        view = await self.call("POST", path, 200)
        self.assertEqual(view["step"]["step_id"], "pwm_settings")
        for inputs, message in (
            ({"hz": 250, "dc": 101}, "'dc' must be <= 100."),
            ({"hz": 250, "dc": "lots"}, "Invalid 'dc', expected a number."),
            ({"hz": 250, "dc": True}, "Invalid 'dc', expected a number."),
            ({"hz": 1000, "dc": 50}, "Invalid 'hz': this unit's pumps run at 250 Hz."),
            ({"dc": 50}, "Missing 'hz'."),
        ):
            await self.error("POST", path, 400, message, json={"inputs": inputs})
        self.assertEqual(
            (
                await self.call(
                    "GET", f"{SESSIONS}/{view['session']['session_id']}", 200
                )
            )["session"],
            view["session"],
        )
        view = await self.send(view, hz=250, dc=50)
        view = await self.send(view)
        view = await self.finish_action(view)
        await self.error(
            "POST",
            path,
            400,
            "The volume cannot be negative.",
            json={"inputs": {"volume_ml": -1}},
        )

    async def test_od_reading_must_be_off(self) -> None:
        config = Config.defaults().with_overrides(
            [*FAST, ("od_config.photodiode_channel", "1", "135")]
        )
        await self.start(config)
        protocols = await self.call("GET", "/unit_api/calibration_protocols", 200)
        self.assertEqual(
            [p["id"] for p in protocols if p["protocol_name"] == "standards"],
            ["od_standards", "od135_standards", "od90_standards"],
        )
        starting = self.unit.manager.run(RunRequest("od_reading", "exp1"))
        for _ in range(40):
            if starting.called:
                break
            await self.unit.advance(0.25)
        await starting
        await self.error(
            "POST",
            SESSIONS,
            400,
            "OD reading must be off before starting.",
            json={"target_device": "od", "protocol_name": "standards"},
        )


class ProtocolListTests(SessionsTestCase):
    async def test_listing_shape_and_order(self) -> None:
        await self.start()
        response = await response_of(
            self.stub, "GET", "/unit_api/calibration_protocols"
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=10"]
        )
        protocols = await self.call("GET", "/unit_api/calibration_protocols", 200)
        self.assertEqual(
            [p["id"] for p in protocols],
            [
                "alt_media_pump_duration_based",
                "media_pump_duration_based",
                "od90_standards",
                "stirring_dc_based",
                "waste_pump_duration_based",
            ],
        )
        media = protocols[1]
        self.assertEqual(
            list(media),
            [
                "id",
                "target_device",
                "protocol_name",
                "priority",
                "title",
                "description",
                "requirements",
            ],
        )
        self.assertEqual(media["priority"], 99)
        self.assertIn("media pump", media["description"])
        self.assertIn(
            "DC Peristaltic pump assigned to media pump", media["requirements"]
        )
        await self.error(
            "POST", "/unit_api/calibration_protocols", 405, "Method not allowed."
        )

    async def test_saved_file_is_the_reference_yaml(self) -> None:
        await self.start()
        view = await self.new("stirring", "dc_based")
        view = await self.finish_action(await self.send(view), edges=True)
        view = await self.send(view)
        [saved] = view["session"]["result"]["calibrations"]
        document = yaml.safe_load(Path(saved["path"]).read_text())
        self.assertEqual(
            list(document)[:5],
            [
                "calibration_type",
                "calibration_name",
                "calibrated_on_pioreactor_unit",
                "created_at",
                "curve_data_",
            ],
        )
        self.assertEqual(document["curve_data_"]["type"], "poly")
