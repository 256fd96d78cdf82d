"""The served API documents, and real answers of the leader's routes checked against them."""

from __future__ import annotations

from typing import Any

import jsonschema
from treq.testing import StubTreq
from twisted.trial.unittest import TestCase

from pioreactor_appliance.limits import Limits
from pioreactor_appliance.openapi import document
from pioreactor_appliance.resources.api_documents import LEADER_PREFIXES

from ..helpers import LeaderApiTestCase, build_unit, request, response_of

AS_PIO1 = {b"host": [b"pio1.local"]}  # build_unit's unit: its policy answers only to its own names


class ServedTests(TestCase):
    def stub(self, role: str) -> tuple[StubTreq, Any]:
        router = build_unit(self, role).getServiceNamed("http").factory.resource
        return StubTreq(router), router

    async def test_leader_serves_both_documents(self) -> None:
        stub, router = self.stub("leader")
        for prefix, title in ((LEADER_PREFIXES, "Pioreactor leader API"), ("/unit_api", "Pioreactor unit API")):
            first = prefix if isinstance(prefix, str) else prefix[0]
            code, body = await request(stub, "GET", f"{first}/openapi.json", headers=AS_PIO1)
            self.assertEqual(code, 200)
            self.assertEqual(body, document(router.routes(), prefix, Limits.defaults(), title))
            self.assertIn(f"{first}/openapi.json", body["paths"])
        _, leader = await request(stub, "GET", "/api/openapi.json", headers=AS_PIO1)
        download = leader["paths"]["/exports/{filename}"]["get"]  # the leader's downloads are documented with /api
        self.assertEqual(list(download["responses"]["200"]["content"]), ["application/zip"])

    async def test_worker_serves_its_own_and_refers_api_to_the_leader(self) -> None:
        stub, _ = self.stub("worker")
        code, body = await request(stub, "GET", "/unit_api/openapi.json", headers=AS_PIO1)
        self.assertEqual((code, body["info"]["title"]), (200, "Pioreactor unit API"))
        self.assertTrue(all(path.startswith("/unit_api/") for path in body["paths"]))
        code, body = await request(stub, "GET", "/api/openapi.json", headers=AS_PIO1)
        self.assertEqual(code, 404)
        self.assertIn("/unit_api", body["remediation"])

    async def test_other_methods_are_json_405(self) -> None:
        stub, _ = self.stub("leader")
        response = await response_of(stub, "POST", "/api/openapi.json", json={"openapi": "3.1.0"}, headers=AS_PIO1)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        self.assertEqual((await response.json())["error_info"]["status"], 405)


class AnswersMatchTheDocumentTests(LeaderApiTestCase):
    """Each route's real answers, with data in the database, validate against the schema it declares."""

    async def checked(self, method: str, template: str, path: str, **kwargs: Any) -> Any:
        code, body = await request(self.stub, method, path, **kwargs)
        operation = self.doc["paths"][template][method.lower()]
        self.assertIn(str(code), operation["responses"], f"{method} {path} answered {code}: {body}")
        answer = operation["responses"][str(code)]
        if "$ref" in answer:
            answer = self.doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        schema = answer["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": self.doc["components"]})
        return body

    async def test_answers_match(self) -> None:
        await self.start()
        self.doc = document(self.router.routes(), "/api", Limits.defaults(), "t")
        check = self.checked
        await check("GET", "/api/experiments/latest", "/api/experiments/latest")
        await check("PUT", "/api/workers", "/api/workers", json={"pioreactor_unit": "pio1", "model_name": "pioreactor_20ml"})
        await check("PUT", "/api/workers", "/api/workers", json={"pioreactor_unit": "pio1"})
        await check("PUT", "/api/workers", "/api/workers", json={"pioreactor_unit": "pio2"})
        await check("POST", "/api/experiments", "/api/experiments", json={"experiment": "exp1", "tags": ["a"], "mediaUsed": "LB"})
        await check("PATCH", "/api/experiments/{experiment}", "/api/experiments/exp1", json={"description": "d"})
        await check("PUT", "/api/experiments/{experiment}/workers", "/api/experiments/exp1/workers", json={"pioreactor_unit": "pio1"})
        await check("PUT", "/api/experiments/{experiment}/unit_labels", "/api/experiments/exp1/unit_labels", json={"unit": "pio1", "label": "R1"})
        await check("PUT", "/api/workers/{unit}/is_active", "/api/workers/pio2/is_active", json={"is_active": 0})
        for template, path in [
            ("/api/experiments", "/api/experiments"),
            ("/api/experiments/latest", "/api/experiments/latest"),
            ("/api/experiments/active", "/api/experiments/active"),
            ("/api/experiments/assignment_count", "/api/experiments/assignment_count"),
            ("/api/experiments/{experiment}", "/api/experiments/exp1"),
            ("/api/experiments/{experiment}/unit_labels", "/api/experiments/current/unit_labels"),
            ("/api/experiments/{experiment}/workers", "/api/experiments/exp1/workers"),
            ("/api/experiments/{experiment}/historical_worker_assignments", "/api/experiments/exp1/historical_worker_assignments"),
            ("/api/units", "/api/units"),
            ("/api/workers", "/api/workers"),
            ("/api/workers/{unit}", "/api/workers/pio1"),
            ("/api/workers/{unit}/experiment", "/api/workers/pio1/experiment"),
            ("/api/workers/{unit}/experiment", "/api/workers/pio2/experiment"),
            ("/api/workers/assignments", "/api/workers/assignments"),
            ("/api/models", "/api/models"),
            ("/api/historical_media", "/api/historical_media"),
            ("/api/historical_organisms", "/api/historical_organisms"),
            ("/api/workers/{unit}", "/api/workers/nobody"),
        ]:
            await check("GET", template, path)
        await check("DELETE", "/api/experiments/{experiment}/workers/{unit}", "/api/experiments/exp1/workers/pio1")
        await check("DELETE", "/api/experiments/{experiment}/workers", "/api/experiments/exp1/workers")
        await check("DELETE", "/api/workers/assignments", "/api/workers/assignments")
        await check("DELETE", "/api/workers/{unit}", "/api/workers/pio2")
        accepted = await check("DELETE", "/api/experiments/{experiment}", "/api/experiments/exp1")
        self.assertEqual(accepted["status"], "pending")
        await check("POST", "/api/experiments", "/api/experiments", json={"experiment": "exp/1"})
        await check("POST", "/api/experiments", "/api/experiments", data=b"x", headers={b"content-type": [b"text/plain"]})
        await check("PATCH", "/api/experiments/{experiment}", "/api/experiments/nope", json={"tags": []})
