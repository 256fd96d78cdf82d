"""The leader's client for the units' ``/unit_api``: concurrent, bounded, never failing as a whole.

Every unit's outcome becomes its own envelope, ``{ok, unit, value}`` or
``{ok: false, unit, error: {kind, message, ...}, status_code, retryable}``,
so one slow or dead Pi shows up as one failed entry and never as a failed
request or a request held past that unit's own timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import treq
from attrs import define, frozen
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredSemaphore,
    TimeoutError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from .addresses import http_base
from .config import Config
from .security.signing import Signer

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ResponseTooLarge(Exception):
    """An answer past its size bound; ``limit`` is that bound, in bytes."""

    def __init__(self, limit: int = MAX_RESPONSE_BYTES) -> None:
        super().__init__(limit)
        self.limit = limit


@define
class ByteBudget:
    """Bytes several raw downloads may hold between them, so a cluster-wide archive stays bounded."""

    total: int
    used: int = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.total:
            raise ResponseTooLarge(self.total)

    def give_back(self, size: int) -> None:
        self.used -= size


@frozen
class Relayed:
    """A unit's HTTP answer as it came: status, media type and body bytes."""

    code: int
    content_type: bytes
    body: bytes


@define
class UnitAddresses:
    """Where each unit's ``/unit_api`` lives: ``[cluster.addresses]``, else ``<unit>.local``, on ``[ui] port``.

    The leader's one copy: the fan-out and ``GET /api/workers`` read it, and adding a worker
    with an address updates it at once (``remember``).
    """

    addresses: dict[str, str]
    default_port: int

    @classmethod
    def from_config(cls, config: Config) -> UnitAddresses:
        entries = {unit: value for unit, value in config.section("cluster.addresses").items() if value}
        return cls(entries, config.get_int("ui", "port"))

    def address(self, unit: str) -> str:
        return self.addresses.get(unit) or f"{unit}.local"

    def remember(self, unit: str, address: str) -> None:
        self.addresses[unit] = address

    def base_url(self, unit: str) -> str:
        return self.url_of(self.address(unit))

    def url_of(self, host: str) -> str:
        """The ``/unit_api`` base URL at ``host`` (``host:port`` keeps its port)."""
        return http_base(host, self.default_port)


@define
class UnitFailure(Exception):
    kind: str
    message: str
    status_code: int | None = None
    retryable: bool = False
    cause: str | None = None
    remediation: str | None = None

    def envelope(self, unit: str) -> dict[str, Any]:
        error: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.cause:
            error["cause"] = self.cause
        if self.remediation:
            error["remediation"] = self.remediation
        return {"ok": False, "unit": unit, "error": error, "status_code": self.status_code, "retryable": self.retryable}


def _unwrap(value: Any) -> Any:
    """The reference drops ``"status": "success"`` from values; clients expect ``{}`` when that is all."""
    if isinstance(value, dict) and value.get("status") == "success":
        value = {k: v for k, v in value.items() if k != "status"}
    return value


TASK_RESULTS_PREFIX = "/unit_api/task_results/"


class FanOut(Service):
    log = Logger()

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        addresses: UnitAddresses,
        *,
        timeout: float,
        post_timeout: float,
        concurrency: int,
        poll_interval: float,
        pool: HTTPConnectionPool | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._http = http
        self._clock = clock
        self.addresses = addresses
        self._timeout = timeout
        self._post_timeout = post_timeout
        self._semaphore = DeferredSemaphore(concurrency)
        self._poll_interval = poll_interval
        self._pool = pool
        self._signer = signer
        self._in_flight: set[Deferred[dict[str, dict[str, Any]]]] = set()

    def stopService(self) -> Deferred[None] | None:
        """Cancel what is still on its way, so no request or timer outlives the service."""
        super().stopService()
        for pending in list(self._in_flight):
            pending.cancel()
        return self._pool.closeCachedConnections() if self._pool is not None else None

    def _track(self, pending: Deferred[Any]) -> Deferred[Any]:
        """Keep ``pending`` cancellable by stopService until it ends."""
        self._in_flight.add(pending)

        def done(result: Any) -> Any:
            self._in_flight.discard(pending)
            return result

        return pending.addBoth(done)

    def request(
        self, method: str, units: Sequence[str], path: str, json: Any = None, *, timeout: float | None = None
    ) -> Deferred[dict[str, dict[str, Any]]]:
        """Send one request to every unit; map each unit to its envelope, sorted by unit."""
        if timeout is None:
            timeout = self._timeout if method in ("GET", "HEAD") else self._post_timeout
        return self._track(Deferred.fromCoroutine(self._fan(units, lambda unit: self._one(method, unit, path, json), timeout)))

    def request_at(self, unit: str, address: str, path: str, *, timeout: float) -> Deferred[dict[str, Any]]:
        """GET ``path`` from ``unit`` at ``address`` rather than its known one (a worker being added); its envelope."""

        def one(unit: str) -> Coroutine[Any, Any, dict[str, Any]]:
            return self._one("GET", unit, path, None, address=address)

        return self._track(Deferred.fromCoroutine(self._fan([unit], one, timeout))).addCallback(lambda envelopes: envelopes[unit])

    def post_bytes(
        self, units: Sequence[str], path: str, body: bytes, content_type: bytes, *, timeout: float
    ) -> Deferred[dict[str, dict[str, Any]]]:
        """POST the same raw ``body`` (a form with a file) to every unit; each answer is read as ``request``'s are,
        a 202 task followed to its end, so the envelopes are alike."""

        def one(unit: str) -> Coroutine[Any, Any, dict[str, Any]]:
            return self._one("POST", unit, path, None, data=body, content_type=content_type)

        return self._track(Deferred.fromCoroutine(self._fan(units, one, timeout)))

    def download(
        self, units: Sequence[str], path: str, *, timeout: float, max_bytes: int, budget: ByteBudget
    ) -> Deferred[dict[str, dict[str, Any]]]:
        """GET raw bytes (archives) from every unit: a 2xx answer's envelope has the bytes as its value.

        Each answer is bounded by ``max_bytes`` and all of them together by ``budget``; a unit past
        either bound, or answering anything but 2xx, is its own failed envelope like any other.
        """
        return self._track(Deferred.fromCoroutine(self._fan(units, lambda unit: self._download(unit, path, max_bytes, budget), timeout)))

    def relay(
        self, method: str, unit: str, path: str, body: bytes, content_type: bytes, *, timeout: float, max_bytes: int
    ) -> Deferred[dict[str, Any]]:
        """Send ``body`` as it is to one unit; its envelope's value is the unit's answer as a Relayed, whatever its status.

        For routes that pass a unit's answer through (an upload re-posted), so the
        route decides what a non-2xx answer becomes; only transport failures are failed envelopes.
        """

        async def one(unit: str) -> dict[str, Any]:
            response = await self._send(method, unit, path, data=body, content_type=content_type)
            raw = await _collect(response, max_bytes)
            return {"ok": True, "unit": unit, "value": Relayed(response.code, _content_type(response), raw)}

        return self._track(Deferred.fromCoroutine(self._fan([unit], one, timeout))).addCallback(lambda envelopes: envelopes[unit])

    async def _fan(
        self, units: Sequence[str], one: Callable[[str], Coroutine[Any, Any, dict[str, Any]]], timeout: float
    ) -> dict[str, dict[str, Any]]:
        unique = sorted(set(units))
        calls = [self._bounded(one, unit, timeout) for unit in unique]
        outcomes = await DeferredList(calls, consumeErrors=True)
        envelopes: dict[str, dict[str, Any]] = {}
        for unit, (ok, value) in zip(unique, outcomes):
            if ok:
                envelopes[unit] = value
            elif value.check(CancelledError):
                envelopes[unit] = _cancelled(unit)
            else:
                self.log.failure("Fan-out to {unit} failed unexpectedly", value, unit=unit)
                envelopes[unit] = UnitFailure("invalid_response", str(value.value)).envelope(unit)
        return envelopes

    def _bounded(
        self, one: Callable[[str], Coroutine[Any, Any, dict[str, Any]]], unit: str, timeout: float
    ) -> Deferred[dict[str, Any]]:
        """``one(unit)`` once a concurrency slot is free; its timeout counts from now, the wait for a
        slot included, so units queued behind slow ones still end within their own timeout."""
        d = self._semaphore.run(lambda: Deferred.fromCoroutine(one(unit)))
        d.addTimeout(timeout, self._clock, onTimeoutCancel=_timed_out)
        return d.addErrback(self._as_envelope, unit, timeout)

    def _as_envelope(self, failure: Any, unit: str, timeout: float) -> dict[str, Any]:
        if failure.check(UnitFailure):
            return failure.value.envelope(unit)
        if failure.check(TimeoutError):
            return UnitFailure("task_timeout", f"{unit} did not answer within {timeout:g} s.", retryable=True).envelope(unit)
        if failure.check(CancelledError):
            return _cancelled(unit)
        if failure.check(ResponseTooLarge):
            return UnitFailure("invalid_response", f"{unit}'s answer is larger than {failure.value.limit} bytes.").envelope(unit)
        return UnitFailure(
            "connection_error", f"Could not reach {unit}'s /unit_api: {failure.getErrorMessage() or failure.type.__name__}.", retryable=True
        ).envelope(unit)

    def _send(
        self,
        method: str,
        unit: str,
        path: str,
        json_body: Any = None,
        *,
        data: bytes = b"",
        content_type: bytes = b"",
        address: str | None = None,
    ) -> Deferred[Any]:
        """One request to one unit, its body serialised here so that the signature covers those bytes."""
        if json_body is not None:
            data, content_type = json.dumps(json_body, separators=(",", ":")).encode("utf-8"), b"application/json"
        headers: dict[bytes, list[bytes]] = {b"content-type": [content_type]} if content_type else {}
        if self._signer is not None:
            headers.update(self._signer.headers(method, path, data))
        base = self.addresses.base_url(unit) if address is None else self.addresses.url_of(address)
        return self._http.request(method, base + path, data=data or None, headers=headers)

    async def _one(
        self,
        method: str,
        unit: str,
        path: str,
        json_body: Any,
        *,
        data: bytes = b"",
        content_type: bytes = b"",
        address: str | None = None,
    ) -> dict[str, Any]:
        response = await self._send(method, unit, path, json_body, data=data, content_type=content_type, address=address)
        code, body = response.code, await _read_json(response)
        if code == 202 and isinstance(body, dict) and "result_url_path" in body and "task_id" in body:
            path = body["result_url_path"]
            if not isinstance(path, str) or not path.startswith(TASK_RESULTS_PREFIX):
                raise UnitFailure("invalid_response", f"{unit} answered 202 with a result_url_path outside {TASK_RESULTS_PREFIX}.", code)
            return await self._poll(unit, path)
        if not 200 <= code < 300:
            raise _http_failure(code, body)
        return {"ok": True, "unit": unit, "value": _unwrap(body)}

    async def _download(self, unit: str, path: str, max_bytes: int, budget: ByteBudget) -> dict[str, Any]:
        response = await self._send("GET", unit, path)
        if not 200 <= response.code < 300:
            raise _http_failure(response.code, await _read_json(response))
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            taken += size
            budget.take(size)

        try:
            raw = await _collect(response, max_bytes, take)
        except BaseException:
            budget.give_back(taken)
            raise
        return {"ok": True, "unit": unit, "value": raw}

    async def _poll(self, unit: str, path: str) -> dict[str, Any]:
        """Follow a unit's task until it ends; the caller's timeout bounds the wait."""
        while True:
            response = await self._send("GET", unit, path)
            code, body = response.code, await _read_json(response)
            if not isinstance(body, dict):
                raise UnitFailure("invalid_response", f"{unit} answered a task poll with {body!r}.", code)
            status = body.get("status")
            if code == 200 and status == "succeeded":
                return {"ok": True, "unit": unit, "value": _unwrap(body.get("result"))}
            if code == 200 and status == "failed":
                raise UnitFailure(
                    "task_failed", str(body.get("error") or "The unit's task failed."), None, False, body.get("cause"), body.get("remediation")
                )
            if code != 202:
                raise _http_failure(code, body)
            await deferLater(self._clock, self._poll_interval)


def _timed_out(result: Any, timeout: float) -> Any:
    """A unit cut off at its timeout timed out, whatever its cancelled request failed with:
    treq reports a request cancelled after the connection opened as ResponseNeverReceived."""
    if isinstance(result, Failure):
        raise TimeoutError(f"timed out after {timeout} seconds")
    return result


def _cancelled(unit: str) -> dict[str, Any]:
    return UnitFailure("task_timeout", f"The request to {unit} was cancelled: the leader is stopping.", retryable=True).envelope(unit)


def _http_failure(code: int, body: Any) -> UnitFailure:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return UnitFailure("http_error", body["error"], code, code >= 500, body.get("cause"), body.get("remediation"))
    return UnitFailure("http_error", f"HTTP {code}", code, code >= 500)


async def _collect(response: Any, max_bytes: int, count: Callable[[int], None] | None = None) -> bytes:
    """The whole body, refused (ResponseTooLarge) as soon as it passes ``max_bytes``; ``count`` sees each chunk's size."""
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise ResponseTooLarge(max_bytes)
        if count is not None:
            count(len(data))
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


def _content_type(response: Any) -> bytes:
    return (response.headers.getRawHeaders(b"content-type") or [b""])[0]


async def _read_json(response: Any) -> Any:
    raw = await _collect(response, MAX_RESPONSE_BYTES)
    content_type = _content_type(response)
    if content_type.lower().startswith(b"text/plain") and 200 <= response.code < 300:
        return raw.decode("utf-8", "replace")  # a unit's file served as text (its unit_config.ini)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise UnitFailure("decode_error", f"The unit answered HTTP {response.code} with a body that is not JSON.", response.code) from None
