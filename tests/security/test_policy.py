"""The request policy behind the router: every check, its refusal, and what passes."""

from __future__ import annotations

import base64
from typing import Any

import attrs
from attrs import define
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.routing import Router, route
from pioreactor_appliance.security.credentials import Credentials
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.policy import AppliancePolicy, PolicyError
from pioreactor_appliance.security.signing import Signer, Verifier

from ..helpers import request

SECRET = b"k" * 40


@define
class Note:
    text: str


class Family:
    app = Klein()

    @route(app, "/unit_api/health", ["GET"], public=True)
    def health(self, request: Any) -> Any:
        return {"ok": True}

    @route(app, "/unit_api/notes", ["GET"])
    def notes(self, request: Any) -> Any:
        return ["a"]

    @route(app, "/unit_api/notes", ["POST"], body=Note)
    def add_note(self, request: Any, body: Note) -> Any:
        return {"added": body.text}

    @route(app, "/unit_api/task_results/<task_id>", ["GET"], by_capability=True)
    def task(self, request: Any, task_id: str) -> Any:
        return {"task_id": task_id}

    @route(app, "/unit_api/system/reboot", ["POST"], dangerous=True)
    def reboot(self, request: Any) -> Any:
        return {"rebooting": True}

    @route(app, "/api/notes", ["POST"], body=Note)
    def add_leader_note(self, request: Any, body: Note) -> Any:
        return {"added": body.text}

    @route(app, "/api/system/update", ["POST"], dangerous=True)
    def update(self, request: Any) -> Any:
        return {"updating": True}

    @route(app, "/api/broadcast", ["GET"], expensive=True)
    def broadcast(self, request: Any) -> Any:
        return {"sent": True}

    @route(app, "/api/upload", ["POST"], upload=True)
    def upload(self, request: Any) -> Any:
        return {"bytes": len(request.content.read())}


def basic(username: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


class PolicyTestCase(TestCase):
    def make(self, **kwargs: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        limits = attrs.evolve(
            Limits.defaults(), json_body_bytes=100, upload_bytes=1000, query_string_bytes=50, query_params=3,
            expensive_per_minute=6, expensive_burst=2, auth_failures_per_minute=3,
        )
        self.policy = AppliancePolicy(self.clock, limits, HostCheck.of(["leader"], []), **kwargs)
        self.stub = StubTreq(Router([Family()], policy=self.policy))

    async def call(self, method: str, path: str, expect: int, *mentions: str, headers: dict[bytes, bytes] | None = None, **kwargs: Any) -> Any:
        raw = {name: [value] for name, value in (headers or {}).items()}
        code, body = await request(self.stub, method, path, headers=raw, **kwargs)
        self.assertEqual(code, expect, body)
        if expect >= 400:
            text = f"{body['error']} {body['cause']} {body.get('remediation')}"
            for mention in mentions:
                self.assertIn(mention, text)
        return body

    def signed(self, method: str, path: str, body: bytes = b"", clock: Clock | None = None, secret: bytes = SECRET) -> dict[bytes, bytes]:
        headers = Signer(secret, clock or self.clock).headers(method, path, body)
        return {name: values[0] for name, values in headers.items()}


class DefaultPolicyTests(PolicyTestCase):
    """Auth off, no cluster secret: the shipped defaults."""

    def setUp(self) -> None:
        self.make()

    async def test_scripts_and_the_own_origin_can_write(self) -> None:
        await self.call("POST", "/unit_api/notes", 200, json={"text": "hi"})
        await self.call("POST", "/unit_api/notes", 200, json={"text": "hi"}, headers={b"origin": b"http://leader"})
        await self.call("POST", "/unit_api/notes", 200, json={"text": "hi"}, headers={b"referer": b"http://leader/overview"})

    async def test_another_origin_cannot_write(self) -> None:
        for headers in [{b"origin": b"http://evil.example"}, {b"origin": b"null"}, {b"referer": b"http://evil.example/x"}]:
            await self.call("POST", "/unit_api/notes", 403, "Cross-site", "evil" if b"null" not in headers.values() else "null", json={"text": "hi"}, headers=headers)
            await self.call("DELETE", "/unit_api/notes", 405)  # an unknown method stays 405, not 403
        await self.call("GET", "/unit_api/notes", 200, headers={b"origin": b"http://evil.example"})

    async def test_a_cross_site_form_post_is_refused(self) -> None:
        """Even without an Origin check, a text/plain body never reaches a JSON route."""
        code, body = await request(self.stub, "POST", "/unit_api/notes", data=b'{"text": "hi"}', headers={b"content-type": [b"text/plain"]})
        self.assertEqual(code, 415, body)

    async def test_foreign_host_names_are_refused(self) -> None:
        await self.call("GET", "/unit_api/notes", 403, "DNS rebinding", "allowed_hosts", headers={b"host": b"evil.example"})
        await self.call("GET", "/unit_api/notes", 200, headers={b"host": b"192.168.1.20"})
        await self.call("GET", "/unit_api/notes", 200, headers={b"host": b"leader.local:80"})

    async def test_query_strings_are_bounded(self) -> None:
        await self.call("GET", "/unit_api/notes?" + "x" * 51, 414, "query_string_bytes")
        await self.call("GET", "/unit_api/notes?a=1&b=2&c=3&d=4", 400, "4 query parameters", "query_params")
        await self.call("GET", "/unit_api/notes?a=1&b=2&c=3", 200)

    async def test_each_route_has_its_body_limit(self) -> None:
        await self.call("POST", "/unit_api/notes", 413, "100 bytes", "json_body_bytes", json={"text": "x" * 100})
        body = await self.call("POST", "/api/upload", 200, data=b"y" * 900)
        self.assertEqual(body, {"bytes": 900})
        await self.call("POST", "/api/upload", 413, "upload_bytes", data=b"y" * 1001)

    async def test_expensive_routes_are_rate_limited_per_client(self) -> None:
        await self.call("GET", "/api/broadcast", 200)
        await self.call("GET", "/api/broadcast", 200)
        code, body = await request(self.stub, "GET", "/api/broadcast")
        self.assertEqual(code, 429)
        self.assertIn("expensive_per_minute", body["remediation"])
        response = await self.stub.get("http://leader/api/broadcast")
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"10"])
        await self.call("GET", "/unit_api/notes", 200)  # cheap routes are not limited
        self.clock.advance(10)
        await self.call("GET", "/api/broadcast", 200)

    async def test_signatures_are_ignored_without_a_secret(self) -> None:
        await self.call("POST", "/unit_api/notes", 200, json={"text": "hi"}, headers={b"x-pioreactor-signature": b"junk"})


class AuthenticationTests(PolicyTestCase):
    def setUp(self) -> None:
        credentials, self.token = Credentials().with_token("script")
        credentials = credentials.with_password("alice", "correct horse")
        self.make(auth="all", credentials=credentials, verifier=Verifier(SECRET, Clock(), 60))
        self.policy.verifier.clock = self.clock  # type: ignore[union-attr]

    async def test_only_health_answers_without_credentials(self) -> None:
        await self.call("GET", "/unit_api/health", 200)
        for method, path in [("GET", "/unit_api/notes"), ("GET", "/api/broadcast"), ("POST", "/api/notes")]:
            await self.call(method, path, 401, "none", json={"text": "x"} if method == "POST" else None)
        response = await self.stub.get("http://leader/unit_api/notes")
        self.assertIn(b"Basic", response.headers.getRawHeaders(b"www-authenticate")[0])
        self.assertIn(b"Bearer", response.headers.getRawHeaders(b"www-authenticate")[0])

    async def test_a_token_or_a_password_lets_a_user_in(self) -> None:
        await self.call("GET", "/unit_api/notes", 200, headers={b"authorization": b"Bearer " + self.token.encode()})
        await self.call("GET", "/unit_api/notes", 200, headers={b"authorization": basic("alice", "correct horse")})
        await self.call("GET", "/unit_api/notes", 200, headers={b"authorization": basic("alice", "correct horse")})

    async def test_wrong_credentials_are_refused_then_throttled(self) -> None:
        await self.call("GET", "/unit_api/notes", 401, "not one this unit knows", headers={b"authorization": b"Bearer pio_guess"})
        await self.call("GET", "/unit_api/notes", 401, "wrong", headers={b"authorization": basic("alice", "wrong horse")})
        await self.call("GET", "/unit_api/notes", 401, "base64", headers={b"authorization": b"Basic !!!"})
        await self.call("GET", "/unit_api/notes", 401, "Digest", headers={b"authorization": b"Digest x"})
        await self.call("GET", "/unit_api/notes", 401, headers={b"authorization": b"Bearer pio_guess2"})
        await self.call("GET", "/unit_api/notes", 429, "auth_failures_per_minute", headers={b"authorization": basic("alice", "correct horse")})
        self.clock.advance(20)
        await self.call("GET", "/unit_api/notes", 200, headers={b"authorization": basic("alice", "correct horse")})

    async def test_the_leader_signature_counts_as_credentials(self) -> None:
        body = b'{"text":"from the leader"}'
        headers = {**self.signed("POST", "/unit_api/notes", body), b"content-type": b"application/json"}
        await self.call("POST", "/unit_api/notes", 200, data=body, headers=headers)


class DangerousRoutesTests(PolicyTestCase):
    def setUp(self) -> None:
        credentials, self.token = Credentials().with_token("script")
        self.make(auth="dangerous", credentials=credentials, verifier=Verifier(SECRET, Clock(), 60))

    async def test_only_dangerous_routes_ask(self) -> None:
        await self.call("GET", "/unit_api/notes", 200)
        await self.call("POST", "/api/notes", 200, json={"text": "x"})
        await self.call("POST", "/api/system/update", 401, "none")
        await self.call("POST", "/api/system/update", 200, headers={b"authorization": b"Bearer " + self.token.encode()})

    async def test_a_unit_takes_dangerous_writes_only_from_the_leader(self) -> None:
        """With a cluster secret, a user's token is not enough on /unit_api: the leader's /api is the way in."""
        self.policy.verifier.clock = self.clock  # type: ignore[union-attr]
        token = {b"authorization": b"Bearer " + self.token.encode()}
        await self.call("POST", "/unit_api/system/reboot", 401, "not signed", headers=token)
        await self.call("POST", "/unit_api/system/reboot", 200, headers=self.signed("POST", "/unit_api/system/reboot"))


class ClusterSecretTests(PolicyTestCase):
    def setUp(self) -> None:
        self.make(verifier=Verifier(SECRET, Clock(), 60))
        self.policy.verifier.clock = self.clock  # type: ignore[union-attr]

    async def test_unit_writes_need_the_signature(self) -> None:
        body = b'{"text":"x"}'
        json_type = {b"content-type": b"application/json"}
        await self.call("POST", "/unit_api/notes", 401, "not signed", "leader's /api", data=body, headers=json_type)
        headers = {**self.signed("POST", "/unit_api/notes", body), **json_type}
        await self.call("POST", "/unit_api/notes", 200, data=body, headers=headers)
        await self.call("POST", "/unit_api/notes", 401, "already used", data=body, headers=headers)
        forged = {**self.signed("POST", "/unit_api/notes", body, secret=b"f" * 40), **json_type}
        await self.call("POST", "/unit_api/notes", 401, "does not match", data=body, headers=forged)
        altered = {**self.signed("POST", "/unit_api/notes", body), **json_type}
        await self.call("POST", "/unit_api/notes", 401, "does not match", data=b'{"text":"y"}', headers=altered)

    async def test_reads_and_the_leader_api_stay_open(self) -> None:
        await self.call("GET", "/unit_api/notes", 200)
        await self.call("POST", "/api/notes", 200, json={"text": "x"})

    async def test_a_forged_signature_on_a_read_is_refused(self) -> None:
        await self.call("GET", "/unit_api/notes", 401, "does not match", headers=self.signed("GET", "/unit_api/notes", secret=b"f" * 40))

    async def test_reads_can_require_the_signature(self) -> None:
        self.policy.sign_reads = True
        await self.call("GET", "/unit_api/notes", 401, "not signed")
        await self.call("GET", "/unit_api/notes?a=1", 200, headers=self.signed("GET", "/unit_api/notes?a=1"))
        await self.call("GET", "/unit_api/health", 200)
        await self.call("GET", "/unit_api/task_results/0f3a", 200)  # named by an unguessable id: users poll it

    async def test_a_large_body_is_hashed_off_the_reactor_thread(self) -> None:
        """Above 1 MiB the digest runs in a thread; the limit here is raised to allow it."""
        self.make(verifier=Verifier(SECRET, self.clock, 60))
        self.policy.limits = attrs.evolve(self.policy.limits, upload_bytes=3 << 20)
        threads: list[str] = []
        original = self.policy.in_thread

        def in_thread(f: Any, *args: Any) -> Any:
            threads.append(f.__name__)
            return original(f, *args)

        self.policy.in_thread = in_thread
        data = b"z" * (2 << 20)
        await self.call("POST", "/api/upload", 200, data=data, headers=self.signed("POST", "/api/upload", data))
        self.assertEqual(threads, ["_digest"])


class SettingsTests(TestCase):
    def test_auth_without_a_secret_is_refused(self) -> None:
        with self.assertRaisesRegex(PolicyError, "needs a cluster secret"):
            AppliancePolicy(Clock(), Limits.defaults(), HostCheck.of(["leader"], []), auth="all")

    def test_an_unknown_auth_mode_is_refused(self) -> None:
        with self.assertRaisesRegex(PolicyError, "off, dangerous, all"):
            AppliancePolicy(Clock(), Limits.defaults(), HostCheck.of(["leader"], []), auth="some")
