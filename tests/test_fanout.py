"""The fan-out against fake units served in memory, with time on a Clock."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived

from pioreactor_appliance.fanout import ByteBudget, FanOut, Relayed, UnitAddresses
from pioreactor_appliance.security.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Signer,
    Verifier,
    body_digest,
)


class FakeUnits:
    """Every fake unit behind one host; the unit's behaviour is picked by its port."""

    app = Klein()

    def __init__(self) -> None:
        self.polls = 0
        self.received: list[tuple[str, str, bytes, dict[bytes, bytes | None]]] = []

    def _receive(self, request: Any) -> None:
        """Keep what a unit's policy would check: method, path, body and the signature headers."""
        headers = {name: request.getHeader(name) for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)}
        body = request.content.read()
        request.content.seek(0)
        self.received.append((request.method.decode(), request.uri.decode(), body, headers))

    @app.route("/unit_api/versions/app", methods=["GET"])
    def version(self, request: Any) -> Any:
        self._receive(request)
        port = request.getHost().port
        request.setHeader(b"content-type", b"application/json")
        if port == 1:
            return json.dumps({"version": "1.0"})
        if port == 2:
            request.setResponseCode(400)
            return json.dumps({"error": "Bad thing", "cause": "because", "remediation": "fix it"})
        if port == 3:
            request.setResponseCode(503)
            return b"<html>down</html>"
        if port == 4:
            return b"not json"
        if port == 6:
            request.setResponseCode(202)
            return json.dumps({"task_id": "t1", "result_url_path": "/unit_api/task_results/t1", "status": "pending"})
        if port == 7:
            request.setResponseCode(202)
            return json.dumps({"task_id": "t2", "result_url_path": "/unit_api/task_results/t2", "status": "pending"})
        if port == 9:
            request.setResponseCode(202)
            return json.dumps({"task_id": "t3", "result_url_path": "@evil.example/steal", "status": "pending"})
        return json.dumps({"status": "success"})

    @app.route("/unit_api/blob", methods=["GET", "POST"])
    def blob(self, request: Any) -> Any:
        """1000 bytes from "ok", a 404 from "bad", the request's own body and type back (418) when posted."""
        if request.method == b"POST":
            request.setResponseCode(418)
            request.setHeader(b"content-type", request.getHeader(b"content-type"))
            return request.content.read()
        if request.getHost().port == 2:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": "No calibrations"})
        return b"z" * 1000

    @app.route("/unit_api/echo", methods=["POST"])
    def echo(self, request: Any) -> Any:
        self._receive(request)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"got": json.loads(request.content.read()), "type": request.getHeader(b"content-type").decode()})

    @app.route("/unit_api/task_results/<task_id>", methods=["GET"])
    def task(self, request: Any, task_id: str) -> Any:
        self._receive(request)
        self.polls += 1
        request.setHeader(b"content-type", b"application/json")
        if self.polls < 3:
            request.setResponseCode(202)
            return json.dumps({"task_id": task_id, "status": "running"})
        if task_id == "t1":
            return json.dumps({"task_id": task_id, "status": "succeeded", "result": {"done": True}})
        return json.dumps({"task_id": task_id, "status": "failed", "error": "pump jammed", "cause": "motor", "remediation": "check pump"})


class HangingClient:
    """StubTreq for every unit but the one on port 5, which accepts the request and never answers."""

    def __init__(self, stub: StubTreq) -> None:
        self._stub = stub
        self.hanging: list[Deferred[Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        if ":5/" in url:
            self.hanging.append(Deferred())
            return self.hanging[-1]
        if ":10/" in url:  # connected, then cut off: the Agent fails as it does once the connection is open
            self.hanging.append(Deferred(lambda d: d.errback(ResponseNeverReceived([Failure(CancelledError())]))))
            return self.hanging[-1]
        return self._stub.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("GET", url, **kwargs)


class FanOutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.units = FakeUnits()
        self.stub = StubTreq(self.units.app.resource())
        self.client = HangingClient(self.stub)
        ports = {"ok": 1, "bad": 2, "down": 3, "garbled": 4, "hangs": 5, "task": 6, "failing": 7, "plain": 8, "astray": 9}
        ports.update({f"hangs{i}": 5 for i in range(5)}, connected=10)
        addresses = UnitAddresses({unit: f"unit.test:{port}" for unit, port in ports.items()}, 80)
        self.fanout = FanOut(self.client, self.clock, addresses, timeout=2.0, post_timeout=30.0, concurrency=3, poll_interval=0.25)

    def run_request(self, units: list[str], advance: float = 0.0) -> dict[str, Any]:
        d = self.fanout.request("GET", units, "/unit_api/versions/app")
        for _ in range(int(advance / 0.25) + 1):
            self.stub.flush()
            self.clock.advance(0.25)
        self.stub.flush()
        return self.successResultOf(d)

    def test_success_value(self) -> None:
        self.assertEqual(self.run_request(["ok"]), {"ok": {"ok": True, "unit": "ok", "value": {"version": "1.0"}}})

    def test_status_success_is_unwrapped(self) -> None:
        self.assertEqual(self.run_request(["plain"])["plain"], {"ok": True, "unit": "plain", "value": {}})

    def test_unit_error_body_is_copied(self) -> None:
        envelope = self.run_request(["bad"])["bad"]
        self.assertEqual(
            envelope,
            {
                "ok": False,
                "unit": "bad",
                "error": {"kind": "http_error", "message": "Bad thing", "cause": "because", "remediation": "fix it"},
                "status_code": 400,
                "retryable": False,
            },
        )

    def test_non_json_5xx_is_decode_error(self) -> None:
        envelope = self.run_request(["down"])["down"]
        self.assertEqual((envelope["ok"], envelope["error"]["kind"], envelope["status_code"]), (False, "decode_error", 503))

    def test_non_json_2xx_is_decode_error(self) -> None:
        self.assertEqual(self.run_request(["garbled"])["garbled"]["error"]["kind"], "decode_error")

    def test_task_is_polled_until_it_succeeds(self) -> None:
        envelope = self.run_request(["task"], advance=1.0)["task"]
        self.assertEqual(envelope, {"ok": True, "unit": "task", "value": {"done": True}})
        self.assertEqual(self.units.polls, 3)

    def test_failed_task_is_task_failed(self) -> None:
        envelope = self.run_request(["failing"], advance=1.0)["failing"]
        self.assertEqual(envelope["error"], {"kind": "task_failed", "message": "pump jammed", "cause": "motor", "remediation": "check pump"})

    def test_hanging_unit_times_out_alone(self) -> None:
        d = self.fanout.request("GET", ["hangs", "ok", "bad"], "/unit_api/versions/app")
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        result = self.successResultOf(d)
        self.assertEqual(list(result), ["bad", "hangs", "ok"])
        self.assertEqual(result["hangs"]["error"]["kind"], "task_timeout")
        self.assertTrue(result["hangs"]["retryable"])
        self.assertTrue(result["ok"]["ok"])

    def test_a_unit_cut_off_after_connecting_timed_out(self) -> None:
        d = self.fanout.request("GET", ["connected", "ok"], "/unit_api/versions/app")
        self.stub.flush()
        self.clock.advance(2.1)
        result = self.successResultOf(d)
        self.assertEqual(result["connected"]["error"], {"kind": "task_timeout", "message": "connected did not answer within 2 s."})
        self.assertTrue(result["ok"]["ok"])

    def test_concurrency_is_bounded(self) -> None:
        units = [f"hangs{i}" for i in range(5)]
        d = self.fanout.request("GET", units, "/unit_api/versions/app")
        self.assertEqual(len(self.client.hanging), 3)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        # Every unit's timeout counts from the request, its wait for a slot included: the two
        # queued behind the hanging three end with them instead of 2 s later.
        self.clock.advance(0.2)
        self.assertEqual({e["error"]["kind"] for e in self.successResultOf(d).values()}, {"task_timeout"})

    def download(self, units: list[str], max_bytes: int, budget: ByteBudget) -> dict[str, Any]:
        d = self.fanout.download(units, "/unit_api/blob", timeout=2.0, max_bytes=max_bytes, budget=budget)
        self.stub.flush()
        return self.successResultOf(d)

    def test_download_gives_the_bytes_and_failures_as_envelopes(self) -> None:
        budget = ByteBudget(10_000)
        result = self.download(["ok", "bad"], 5000, budget)
        self.assertEqual(result["ok"], {"ok": True, "unit": "ok", "value": b"z" * 1000})
        self.assertEqual((result["bad"]["error"]["kind"], result["bad"]["status_code"]), ("http_error", 404))
        self.assertEqual(budget.used, 1000)

    def test_download_is_bounded_per_answer_and_in_all(self) -> None:
        self.assertEqual(self.download(["ok"], 999, ByteBudget(10_000))["ok"]["error"]["message"], "ok's answer is larger than 999 bytes.")
        budget = ByteBudget(1500)
        result = self.download(["ok", "plain"], 5000, budget)
        self.assertEqual(sorted(e["ok"] for e in result.values()), [False, True])
        self.assertEqual(budget.used, 1000)  # the refused answer's bytes were given back

    def test_relay_passes_any_answer_through(self) -> None:
        d = self.fanout.relay("POST", "ok", "/unit_api/blob", b"raw", b"application/zip", timeout=2.0, max_bytes=100)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d), {"ok": True, "unit": "ok", "value": Relayed(418, b"application/zip", b"raw")})

    def test_json_body_is_sent_as_json(self) -> None:
        d = self.fanout.request("POST", ["ok"], "/unit_api/echo", json={"experiment": "e1"})
        self.stub.flush()
        value = self.successResultOf(d)["ok"]["value"]
        self.assertEqual(value["got"], {"experiment": "e1"})
        self.assertTrue(value["type"].startswith("application/json"))

    def test_a_task_url_outside_task_results_is_not_followed(self) -> None:
        envelope = self.run_request(["astray"])["astray"]
        self.assertEqual((envelope["ok"], envelope["error"]["kind"]), (False, "invalid_response"))
        self.assertEqual(len(self.units.received), 1)

    def test_every_request_and_poll_is_signed_when_a_secret_is_set(self) -> None:
        secret = b"c" * 40
        self.clock.advance(1_800_000_000)
        self.fanout._signer = Signer(secret, self.clock)
        d = self.fanout.request("POST", ["ok"], "/unit_api/echo", json={"experiment": "e1"})
        self.stub.flush()
        self.successResultOf(d)
        self.run_request(["task"], advance=1.0)
        verifier = Verifier(secret, self.clock, max_skew=5)
        self.assertEqual([(m, u) for m, u, _, _ in self.units.received[:3]], [("POST", "/unit_api/echo"), ("GET", "/unit_api/versions/app"), ("GET", "/unit_api/task_results/t1")])
        for method, uri, body, headers in self.units.received:
            verifier.verify(method, uri, body_digest(body), headers)

    def test_unsigned_without_a_secret(self) -> None:
        self.run_request(["ok"])
        self.assertEqual(self.units.received[0][3], {TIMESTAMP_HEADER: None, NONCE_HEADER: None, SIGNATURE_HEADER: None})

    def test_stopping_cancels_requests_in_flight_and_their_timers(self) -> None:
        self.fanout.startService()
        d = self.fanout.request("GET", ["hangs", "hangs1"], "/unit_api/versions/app")
        self.stub.flush()
        self.assertNoResult(d)
        self.assertTrue(self.clock.getDelayedCalls())
        self.fanout.stopService()
        envelopes = self.successResultOf(d)
        self.assertEqual({unit: e["error"]["message"] for unit, e in envelopes.items()}, {
            "hangs": "The request to hangs was cancelled: the leader is stopping.",
            "hangs1": "The request to hangs1 was cancelled: the leader is stopping.",
        })
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.flushLoggedErrors(), [], "a cancellation is not an error")

    def test_duplicate_units_are_asked_once(self) -> None:
        self.assertEqual(list(self.run_request(["ok", "ok"])), ["ok"])


class AddressTests(SynchronousTestCase):
    def test_configured_host_and_port(self) -> None:
        addresses = UnitAddresses({"pio1": "10.0.0.5", "pio2": "127.0.0.1:8102", "pio3": "[::1]:9000"}, 80)
        self.assertEqual(addresses.base_url("pio1"), "http://10.0.0.5:80")
        self.assertEqual(addresses.base_url("pio2"), "http://127.0.0.1:8102")
        self.assertEqual(addresses.base_url("pio3"), "http://[::1]:9000")
        self.assertEqual(addresses.base_url("pio4"), "http://pio4.local:80")
