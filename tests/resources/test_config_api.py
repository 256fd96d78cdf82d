"""``/unit_api/config/merged`` and ``/unit_api/config/specific``: reading, and edits that never break the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.config_api import ConfigApi
from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.policy import AppliancePolicy

from ..helpers import _settle, request

SHARED = "[cluster.topology]\nleader_hostname=lead\nleader_address=10.0.0.2\n\n[mqtt]\npassword=raspberry\n\n[leds]\nA=IR\nB=white\nC=\n"
UNIT = "[stirring.config]\ninitial_target_rpm=400\n"


class ConfigApiTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        (self.root / "config.ini").write_text(SHARED)
        (self.root / "unit_config.ini").write_text(UNIT)
        policy = AppliancePolicy(
            Clock(), Limits.defaults(), HostCheck.of(["leader"], [])
        )
        self.stub = StubTreq(
            Router([ConfigApi(self.root, Config.load(self.root))], policy=policy)
        )

    async def save(self, code: Any, method: str = "PATCH") -> tuple[int, Any]:
        return await request(
            self.stub, method, "/unit_api/config/specific", json={"code": code}
        )

    def on_disk(self) -> str:
        return (self.root / "unit_config.ini").read_text()

    async def test_merged_layers_unit_over_shared_over_defaults(self) -> None:
        code, merged = await request(self.stub, "GET", "/unit_api/config/merged")
        self.assertEqual(code, 200)
        self.assertEqual(
            merged["stirring.config"]["initial_target_rpm"], "400"
        )  # unit_config.ini
        self.assertEqual(
            merged["stirring.config"]["initial_duty_cycle"], "30"
        )  # shipped default
        self.assertEqual(
            merged["cluster.topology"]["leader_hostname"], "lead"
        )  # config.ini
        self.assertEqual(merged["leds_reverse"], {"IR": "A", "white": "B"})
        self.assertEqual(merged["PWM_reverse"]["stirring"], "1")
        self.assertEqual(merged["cluster.addresses"]["lead"], "10.0.0.2")
        self.assertEqual(merged["mqtt"]["password"], "<redacted>")
        self.assertEqual(merged["mqtt"]["username"], "")
        self.assertTrue(
            all(isinstance(v, str) for s in merged.values() for v in s.values())
        )

    async def test_merged_names_a_broken_file(self) -> None:
        (self.root / "config.ini").write_text("[x]\na=1\n[x]\n")
        code, body = await request(self.stub, "GET", "/unit_api/config/merged")
        self.assertEqual((code, body["error"]), (500, "Failed to read merged config"))
        self.assertIn("config.ini, line 3", body["cause"])

    async def test_specific_is_the_file_as_text(self) -> None:
        response = await _settle(
            self.stub,
            self.stub.request("GET", "http://leader/unit_api/config/specific"),
            "GET",
        )
        self.assertEqual(
            await _settle(self.stub, response.content(), "body"), UNIT.encode()
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/plain; charset=utf-8"],
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"no-store"]
        )
        (self.root / "unit_config.ini").unlink()
        response = await _settle(
            self.stub,
            self.stub.request("GET", "http://leader/unit_api/config/specific"),
            "GET",
        )
        self.assertEqual(
            (response.code, await _settle(self.stub, response.content(), "body")),
            (200, b""),
        )

    async def test_an_edit_is_saved_and_says_a_restart_is_needed(self) -> None:
        for method in ("PATCH", "POST"):
            new = f"[stirring.config]\ninitial_target_rpm=6{len(method)}0\n"
            code, body = await self.save(new, method)
            self.assertEqual(code, 200, body)
            self.assertEqual(
                (body["status"], body["restart_required"]), ("success", True)
            )
            self.assertEqual(self.on_disk(), new)
        self.assertEqual(
            [p.name for p in self.root.iterdir() if p.name.endswith(".tmp")], []
        )

    async def test_an_edit_equal_to_the_running_config_needs_no_restart(self) -> None:
        code, body = await self.save(UNIT + "\n# a comment\n")
        self.assertEqual((code, body["restart_required"]), (200, False), body)

    async def test_dashes_are_plain_on_disk(self) -> None:
        code, _ = await self.save(
            "[stirring.config]\ninitial_target_rpm=500\n# 1\u20132\u20143\n"
        )
        self.assertEqual(code, 200)
        self.assertIn("# 1-2-3", self.on_disk())

    async def test_bad_ini_names_the_line_and_leaves_the_file(self) -> None:
        cases = [
            ("[a]\nx=1\n[a]\n", "line 3", "duplicate section"),
            ("[a]\nx=1\nx=2\n", "line 3", "duplicate option"),
            ("x=1\n", "line 1", "before any [section]"),
            ("[a]\nx=1\n  [oops\n=nokey\n", "line 4", "cannot parse"),
        ]
        for text, line, why in cases:
            code, body = await self.save(text)
            self.assertEqual(
                (code, body["error"]), (400, "Incorrect syntax in the config."), text
            )
            self.assertIn(f"unit_config.ini, {line}", body["cause"])
            self.assertIn(why, body["cause"])
            self.assertEqual(self.on_disk(), UNIT)

    async def test_a_config_that_would_not_start_is_refused(self) -> None:
        for text, mention in (
            ("[hardware]\nheater_max_duty=150\n", "heater_max_duty"),
            ("[limits]\npage_size=many\n", "page_size"),
            ("[mqtt]\nbroker_port=\n", "broker_port"),
        ):
            code, body = await self.save(text)
            self.assertEqual(
                (code, body["error"]),
                (400, "The config would not start the unit."),
                body,
            )
            self.assertIn(mention, body["cause"])
            self.assertEqual(self.on_disk(), UNIT)

    async def test_bad_bodies(self) -> None:
        for body in (
            {},
            {"code": 3},
            {"code": ["x"]},
            {"code": "", "extra": 1},
            "text",
        ):
            code, answer = await request(
                self.stub, "PATCH", "/unit_api/config/specific", json=body
            )
            self.assertEqual(
                (code, answer["error"]), (400, "Invalid request body."), body
            )
        code, _ = await request(
            self.stub,
            "PATCH",
            "/unit_api/config/specific",
            data=b"[a]\nx=1\n",
            headers={b"content-type": [b"text/plain"]},
        )
        self.assertEqual(code, 415)
        huge = json.dumps({"code": "#" * Limits.defaults().json_body_bytes}).encode()
        code, answer = await request(
            self.stub,
            "PATCH",
            "/unit_api/config/specific",
            data=huge,
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(code, 413, answer)
        self.assertEqual(self.on_disk(), UNIT)
        self.assertEqual(
            (await request(self.stub, "DELETE", "/unit_api/config/specific"))[0], 405
        )
        self.assertEqual(
            (await request(self.stub, "POST", "/unit_api/config/merged"))[0], 405
        )

    async def test_the_shared_config_is_replaced_once_it_would_start_this_unit(self) -> None:
        new = SHARED + "\n[notes]\nlab=B12\n"
        code, body = await request(self.stub, "PATCH", "/unit_api/config/shared", json={"code": new})
        self.assertEqual((code, body["status"], body["restart_required"]), (200, "success", True), body)
        self.assertEqual((self.root / "config.ini").read_text(), new)
        for text, mention in (
            ("[cluster.topology]\nleader_hostname=lead\n", "leader_address"),
            ("[cluster.topology]\nleader_hostname=lead\nleader_address=https://lead\n", "not a URL"),
            (SHARED + "[hardware]\nheater_max_duty=150\n", "heater_max_duty"),
            ("[a]\n[a]\n", "duplicate section"),
            ("#" * 300_000, "at most"),
        ):
            code, body = await request(self.stub, "PATCH", "/unit_api/config/shared", json={"code": text})
            self.assertEqual(code, 400, body)
            self.assertIn(mention, body["cause"])
            self.assertEqual((self.root / "config.ini").read_text(), new)
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), ["config.ini", "unit_config.ini"])
