"""The router and the site: JSON for every error, 405 with Allow, 413 before a body is buffered."""

from __future__ import annotations

import json
from typing import Any

import attrs
from attrs import define
from klein import Klein
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pioreactor_appliance.bodies import read_form_file
from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.routing import Reply, Router, make_site, route


@define
class Body:
    value: int


class Things:
    app = Klein()

    @route(app, ("/api/things/<name>", "/api/stuff/<name>"), ["GET"])
    def get_thing(self, request: Any, name: str) -> Any:
        """One thing, under either name."""
        return {"thing": name}

    @route(app, "/api/things", ["POST"], body=Body)
    def post_thing(self, request: Any, body: Body) -> Reply:
        return Reply({"value": body.value}, code=201)

    @route(app, "/api/crash", ["GET"])
    def crash(self, request: Any) -> Any:
        raise RuntimeError("a secret traceback detail")

    @route(app, "/api/async_refusal", ["GET"])
    async def refuse(self, request: Any) -> Any:
        raise ApiError(409, "Already exists.", remediation="Pick another name.")

    @route(app, "/api/upload", ["POST"], upload=True)
    async def upload(self, request: Any) -> Any:
        data = await read_form_file(request, "file", "No file uploaded", "Send it as the form field 'file'.")
        return {"bytes": len(data)}

    @route(app, "/api/text", ["GET"])
    def text(self, request: Any) -> Reply:
        return Reply("plain words", content_type=b"text/plain")


class Special:
    app = Klein()

    @route(app, "/api/things/special", ["GET"])
    def special(self, request: Any) -> Any:
        return "special"


def router() -> Router:
    return Router([Things(), Special()], {"/api/hidden": ApiError(404, "Hidden here.", remediation="Go elsewhere.")})


class RouterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = StubTreq(router())

    def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
        response = self.successResultOf(self.client.request(method, "http://unit" + url, **kwargs))
        raw = self.successResultOf(response.content())
        body = json.loads(raw) if response.headers.getRawHeaders(b"content-type") == [b"application/json"] else raw
        return response.code, body, response.headers

    def assertError(self, result: tuple[int, Any, Any], code: int, words: str) -> None:
        status, body, _ = result
        self.assertEqual(status, code)
        self.assertEqual(body["status"], code)
        self.assertEqual(body["error_info"]["status"], code)
        self.assertIn(words, body["error"] + " " + body["cause"])

    def test_routes_answer_json(self) -> None:
        self.assertEqual(self.call("GET", "/api/things/a")[:2], (200, {"thing": "a"}))
        self.assertEqual(self.call("GET", "/api/stuff/b")[:2], (200, {"thing": "b"}))
        self.assertEqual(self.call("POST", "/api/things", json={"value": 3})[:2], (201, {"value": 3}))
        self.assertEqual(self.call("GET", "/api/text")[:2], (200, b"plain words"))

    def test_literal_in_one_family_beats_parameter_in_another(self) -> None:
        self.assertEqual(self.call("GET", "/api/things/special")[:2], (200, "special"))

    def test_unknown_path_is_json_404(self) -> None:
        self.assertError(self.call("GET", "/api/nothing/here"), 404, "/api/nothing/here")

    def test_prefix_fallback(self) -> None:
        status, body, _ = self.call("GET", "/api/hidden/x")
        self.assertEqual((status, body["error"], body["remediation"]), (404, "Hidden here.", "Go elsewhere."))

    def test_wrong_method_is_json_405_with_allow(self) -> None:
        result = self.call("DELETE", "/api/things/a")
        self.assertError(result, 405, "DELETE")
        self.assertEqual(result[2].getRawHeaders(b"allow"), [b"GET, HEAD"])

    def test_bad_body(self) -> None:
        self.assertError(self.call("POST", "/api/things", json={"value": "x"}), 400, "body.value")
        self.assertError(self.call("POST", "/api/things", data=b"value=1"), 415, "application/json")

    def test_unexpected_exception_is_500_without_traceback(self) -> None:
        status, body, _ = self.call("GET", "/api/crash")
        self.assertEqual(status, 500)
        self.assertNotIn("secret", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_api_error_from_coroutine(self) -> None:
        self.assertError(self.call("GET", "/api/async_refusal"), 409, "Already exists.")

    def test_route_table_lists_declared_routes(self) -> None:
        paths = [(info.path, info.methods) for info in router().routes()]
        self.assertIn(("/api/things", ("POST",)), paths)
        self.assertIn(("/api/things/special", ("GET",)), paths)
        self.assertIn(("/api/stuff/<name>", ("GET",)), paths)  # one handler, each of its paths listed
        self.assertEqual(len(paths), 8)


class GatePolicy:
    """Admits once ``gate`` fires; raises what it is told to raise."""

    def __init__(self) -> None:
        self.gate: Deferred[None] | None = None
        self.error: Exception | None = None
        self.seen: list[str] = []

    def admit(self, request: Any, info: Any) -> Deferred[None] | None:
        self.seen.append(info.path)
        if self.error is not None:
            raise self.error
        return self.gate


class PolicyHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = GatePolicy()
        self.client = StubTreq(Router([Things(), Special()], policy=self.policy))

    def test_the_policy_sees_the_matched_route(self) -> None:
        response = self.successResultOf(self.client.get("http://unit/api/things/a"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.policy.seen, ["/api/things/<name>"])
        self.successResultOf(self.client.get("http://unit/api/stuff/a"))
        self.assertEqual(self.policy.seen[-1], "/api/stuff/<name>", "the path that matched, not the handler's first")
        self.successResultOf(self.client.get("http://unit/api/nothing"))
        self.assertEqual(len(self.policy.seen), 2, "unknown paths never reach the policy")

    def test_a_refusal_is_the_policys_error(self) -> None:
        self.policy.error = ApiError(403, "No.", remediation="Ask nicely.")
        response = self.successResultOf(self.client.post("http://unit/api/things", json={"value": 1}))
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, body["error"]), (403, "No."))

    def test_a_policy_crash_is_a_500_without_traceback(self) -> None:
        self.policy.error = RuntimeError("secret detail")
        response = self.successResultOf(self.client.get("http://unit/api/things/a"))
        raw = self.successResultOf(response.content())
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"secret", raw)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_deferred_admission_runs_the_handler_later(self) -> None:
        self.policy.gate = Deferred()
        pending = self.client.post("http://unit/api/things", json={"value": 2})
        self.client.flush()
        self.assertNoResult(pending)
        self.policy.gate.callback(None)
        self.client.flush()
        response = self.successResultOf(pending)
        self.assertEqual((response.code, json.loads(self.successResultOf(response.content()))), (201, {"value": 2}))

    def test_a_deferred_refusal_is_json(self) -> None:
        self.policy.gate = Deferred()
        pending = self.client.get("http://unit/api/things/a")
        self.client.flush()
        self.policy.gate.errback(ApiError(401, "Who are you?"))
        self.client.flush()
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 401)


class SiteOverTcpTests(TestCase):
    """The body limit needs a real connection: it acts while the body arrives."""

    async def test_oversized_body_is_413_and_small_one_passes(self) -> None:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(make_site(router(), attrs.evolve(Limits.defaults(), json_body_bytes=64, upload_bytes=64)))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/api/things"
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        response = await client.post(url, json={"value": 1, "padding": "x" * 200})
        body = await response.json()
        self.assertEqual((response.code, body["status"]), (413, 413))
        self.assertIn("64 bytes", body["cause"])
        response = await client.post(url, json={"value": 1})
        self.assertEqual(response.code, 201)
        await response.content()

    async def test_a_form_is_read_by_the_route_and_a_malformed_one_is_a_json_400(self) -> None:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(make_site(router(), Limits.defaults()))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/api/upload"
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        response = await client.post(url, files={"file": ("a.zip", b"12345")})
        self.assertEqual((response.code, await response.json()), (200, {"bytes": 5}))
        # A multipart type with no boundary: Twisted on its own answers a bare 400 and hangs up.
        response = await client.post(url, data=b"garbage", headers={b"content-type": [b"multipart/form-data"]})
        body = await response.json()
        self.assertEqual((response.code, body["error"]), (400, "No file uploaded"))
        self.assertIn("malformed", body["cause"])
