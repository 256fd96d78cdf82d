"""The policy on a real cluster: real sockets, real fan-out, the files a lab would write."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock

from pioreactor_appliance.resources.routing import Router
from pioreactor_appliance.security.credentials import CREDENTIALS_FILE, Credentials
from pioreactor_appliance.security.signing import SECRET_FILE, Signer, new_secret

from ..cluster import ClusterTestCase

EVIL = {b"origin": [b"http://evil.example"]}


def router_of(service: Any) -> Router:
    return service.getServiceNamed("http").factory.resource


def concrete(path: str) -> str:
    """A route's path with a plausible value in each parameter."""
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: {"unit": "leader", "experiment": "exp1"}.get(m.group(1), "x1"), path)


class CrossSiteTests(ClusterTestCase):
    async def test_another_origin_cannot_change_anything(self) -> None:
        await self.start_cluster(["pio1"])
        await self.call("POST", "leader", "/api/experiments", expect=201, json={"experiment": "exp1"})
        before = [await self.call("GET", "leader", path, expect=200) for path in ("/api/experiments", "/api/workers", "/api/experiments/exp1/workers")]
        attempts: list[tuple[str, str, Any]] = [
            ("POST", "/api/experiments", {"experiment": "exp2"}),
            ("PATCH", "/api/experiments/exp1", {"description": "defaced"}),
            ("DELETE", "/api/experiments/exp1", None),
            ("PUT", "/api/workers", {"pioreactor_unit": "pio9"}),
            ("DELETE", "/api/workers/pio1", None),
            ("PUT", "/api/experiments/exp1/workers", {"pioreactor_unit": "pio1"}),
        ]
        for method, path, body in attempts:
            refused = await self.call(method, "leader", path, expect=403, json=body, headers=EVIL)
            self.assertIn("evil.example", refused["cause"])
        form = await self.http.post(
            f"http://127.0.0.1:{self.ports['leader']}/api/experiments",
            data=b'{"experiment": "exp3"}',
            headers={b"content-type": [b"text/plain"]},
        )
        self.assertEqual(form.code, 415)
        await form.content()
        after = [await self.call("GET", "leader", path, expect=200) for path in ("/api/experiments", "/api/workers", "/api/experiments/exp1/workers")]
        self.assertEqual(after, before)
        own = {b"origin": [f"http://127.0.0.1:{self.ports['leader']}".encode()]}
        await self.call("PATCH", "leader", "/api/experiments/exp1", expect=200, json={"description": "ok"}, headers=own)

    async def test_a_rebound_name_is_refused(self) -> None:
        await self.start_cluster([])
        refused = await self.call("GET", "leader", "/api/experiments", expect=403, headers={b"host": [b"evil.example"]})
        self.assertIn("allowed_hosts", refused["remediation"])
        await self.call("GET", "leader", "/api/experiments", expect=200, headers={b"host": [b"leader.local"]})


class AuthenticationTests(ClusterTestCase):
    async def start(self) -> None:
        """A leader and a worker with require=all; ``self.headers`` carries a valid token."""
        credentials, token = Credentials().with_token("tests")
        self.headers = {b"authorization": [f"Bearer {token}".encode()]}
        files = {CREDENTIALS_FILE: credentials.dumps(), SECRET_FILE: new_secret()}
        await self.start_cluster(["pio1"], config="[auth]\nrequire=all\n", files=files)

    async def test_only_health_answers_without_credentials(self) -> None:
        await self.start()
        checked = 0
        for unit in ("leader", "pio1"):
            for info in router_of(self.services[unit]).routes():
                for method in info.methods:
                    expect = 200 if info.path == "/unit_api/health" else 401
                    response = await self.http.request(method, f"http://127.0.0.1:{self.ports[unit]}{concrete(info.path)}", json={})
                    body = await response.json()
                    self.assertEqual(response.code, expect, f"{unit} {method} {info.path}: {body}")
                    checked += 1
        self.assertGreater(checked, 30)

    async def test_a_user_with_credentials_reaches_the_units_through_the_leader(self) -> None:
        await self.start()
        accepted = await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202)
        result = await self.wait_for_result(accepted)
        self.assertEqual({unit: envelope["ok"] for unit, envelope in result["result"].items()}, {"leader": True, "pio1": True})


class ClusterSecretTests(ClusterTestCase):
    async def test_units_take_only_the_leaders_signed_requests(self) -> None:
        secret = new_secret()
        await self.start_cluster(["pio1"], config="[cluster.security]\nsign_reads=1\n", files={SECRET_FILE: secret})
        result = await self.wait_for_result(await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202))
        self.assertEqual({unit: envelope["ok"] for unit, envelope in result["result"].items()}, {"leader": True, "pio1": True}, result)
        refused = await self.call("GET", "pio1", "/unit_api/versions/app", expect=401)
        self.assertIn("not signed", refused["cause"])
        clock = Clock()
        clock.advance(reactor.seconds())
        forged = Signer(new_secret().encode(), clock).headers("GET", "/unit_api/versions/app", b"")
        refused = await self.call("GET", "pio1", "/unit_api/versions/app", expect=401, headers=forged)
        self.assertIn("does not match", refused["cause"])
        genuine = Signer(secret.encode(), clock).headers("GET", "/unit_api/versions/app", b"")
        await self.call("GET", "pio1", "/unit_api/versions/app", expect=200, headers=genuine)
        await self.call("GET", "pio1", "/unit_api/versions/app", expect=401, headers=genuine)  # a replay
        await self.call("GET", "pio1", "/unit_api/health", expect=200)



class RateLimitTests(ClusterTestCase):
    async def test_expensive_routes_are_limited_per_client_and_cheap_ones_are_not(self) -> None:
        await self.start_cluster(["pio1"], config="[limits]\nexpensive_per_minute=1\nexpensive_burst=2\n")
        for _ in range(2):
            await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202)
        response = await self.http.get(self.url("leader", "/api/units/$broadcast/versions/app"))
        body = await response.json()
        self.assertEqual(response.code, 429, body)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"60"])
        self.assertIn("expensive_per_minute", body["remediation"])
        for _ in range(5):
            await self.call("GET", "leader", "/api/workers", expect=200)
