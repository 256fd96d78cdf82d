"""The request policy: every check a request meets between its route and its handler.

In order: the query string's size, the ``Host`` header, the origin of a
state-changing request, the route's body limit, the cluster signature, user
credentials, and the rate limit of expensive routes. Each refusal is an
``ApiError`` that says which check failed and what to do about it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..config import Config, ConfigError
from ..errors import ApiError
from ..limits import Limits
from ..resources.routing import RouteInfo, body_too_large
from .credentials import Credentials, CredentialsError
from .hosts import HostCheck
from .origins import is_cross_site, normalise
from .ratelimit import RateLimiter
from .signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SecretError,
    SignatureError,
    Verifier,
    load_secret,
)

log = Logger()

AUTH_MODES = ("off", "dangerous", "all")
STATE_CHANGING = {b"POST", b"PUT", b"PATCH", b"DELETE"}
CHALLENGE = b'Basic realm="pioreactor", Bearer realm="pioreactor"'
REMEMBER_PASSWORDS_SECONDS = 300.0
HASH_IN_THREAD_BYTES = 1 << 20


class PolicyError(Exception):
    """The security settings cannot be put together; start-up stops with this message."""


def _unauthorised(cause: str) -> ApiError:
    return ApiError(
        401,
        "Authentication required.",
        cause=cause,
        remediation="Send Authorization: Bearer <token> or HTTP Basic credentials; see docs/security.md to create them.",
        headers={b"www-authenticate": CHALLENGE},
    )


def _body_size(request: IRequest) -> int:
    content = request.content
    if content is None:
        return 0
    size = content.seek(0, 2)
    content.seek(0)
    return size


def _digest(request: IRequest) -> str:
    """SHA-256 of the body, read in chunks: an upload may be a large file on disk."""
    digest = hashlib.sha256()
    content = request.content
    if content is not None:
        content.seek(0)
        for chunk in iter(lambda: content.read(1 << 16), b""):
            digest.update(chunk)
        content.seek(0)
    return digest.hexdigest()


def _client(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


@define
class PasswordMemory:
    """Recently verified passwords, as keyed hashes that die with the process."""

    clock: IReactorTime
    _key: bytes = field(factory=lambda: secrets.token_bytes(32), init=False)
    _until: OrderedDict[bytes, float] = field(factory=OrderedDict, init=False)

    def _mark(self, username: str, password: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def knows(self, username: str, password: str) -> bool:
        until = self._until.get(self._mark(username, password))
        return until is not None and until > self.clock.seconds()

    def remember(self, username: str, password: str) -> None:
        self._until[self._mark(username, password)] = self.clock.seconds() + REMEMBER_PASSWORDS_SECONDS
        while len(self._until) > 256:
            self._until.popitem(last=False)


@define
class AppliancePolicy:
    """Admits or refuses each request; see the module docstring for the order of checks."""

    clock: IReactorTime
    limits: Limits
    hosts: HostCheck
    trusted_origins: frozenset[str] = frozenset()
    auth: str = "off"
    credentials: Credentials = field(factory=Credentials)
    verifier: Verifier | None = None
    sign_reads: bool = False
    in_thread: Callable[..., Deferred[Any]] = deferToThread
    _expensive: RateLimiter = field(init=False)
    _failures: RateLimiter = field(init=False)
    _passwords: PasswordMemory = field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise PolicyError(f"[auth] require must be one of {', '.join(AUTH_MODES)}, not {self.auth!r}")
        if self.auth != "off" and self.verifier is None:
            raise PolicyError(
                f"[auth] require={self.auth} needs a cluster secret, or the leader could not reach the units: "
                "run `pioreactor-appliance-auth secret` on the leader and copy the file to every unit (docs/security.md)"
            )
        self._expensive = RateLimiter(self.clock, self.limits.expensive_per_minute, self.limits.expensive_burst)
        self._failures = RateLimiter(self.clock, self.limits.auth_failures_per_minute, self.limits.auth_failures_per_minute)
        self._passwords = PasswordMemory(self.clock)

    def admit(self, request: IRequest, info: RouteInfo) -> Deferred[None] | None:
        self._check_query(request)
        self._check_host(request)
        self._check_origin(request)
        size = self._check_body(request, info)
        if not self._signature_to_check(request, info):
            return self._admit_caller(request, info, None)
        if size > HASH_IN_THREAD_BYTES:
            return self.in_thread(_digest, request).addCallback(lambda digest: self._admit_caller(request, info, digest))
        return self._admit_caller(request, info, _digest(request))

    def _admit_caller(self, request: IRequest, info: RouteInfo, digest: str | None) -> Deferred[None] | None:
        if digest is not None:
            self._check_signature(request, digest)
            return None  # the leader: authenticated, and not rate limited by its own units
        if self._needs_user(info):
            pending = self._check_user(request)
            if pending is not None:
                return pending.addCallback(lambda _: self._check_rate(request, info))
        self._check_rate(request, info)
        return None

    def _check_query(self, request: IRequest) -> None:
        query = request.uri.partition(b"?")[2]
        if len(query) > self.limits.query_string_bytes:
            raise ApiError(
                414,
                "Query string too long.",
                cause=f"The query string has {len(query)} bytes; this unit takes at most {self.limits.query_string_bytes}.",
                remediation="Send fewer or shorter parameters, or raise [limits] query_string_bytes.",
            )
        count = sum(len(values) for values in (request.args or {}).values())
        if count > self.limits.query_params:
            raise ApiError(
                400,
                "Too many query parameters.",
                cause=f"The request has {count} query parameters; this unit takes at most {self.limits.query_params}.",
                remediation="Send only the parameters the route documents, or raise [limits] query_params.",
            )

    def _check_host(self, request: IRequest) -> None:
        host = request.getHeader(b"host")
        if not self.hosts.allows(host):
            shown = (host or b"").decode("latin-1")[:100]
            raise ApiError(
                403,
                "Host not allowed.",
                cause=f"This unit does not answer to the name {shown!r} (a guard against DNS rebinding).",
                remediation="Use the unit's own name or IP address, or add the name to [security] allowed_hosts.",
            )

    def _check_origin(self, request: IRequest) -> None:
        if request.method not in STATE_CHANGING:
            return
        foreign = is_cross_site(request, self.trusted_origins)
        if foreign is not None:
            raise ApiError(
                403,
                "Cross-site request refused.",
                cause=f"A page from {foreign} tried to change something on this unit.",
                remediation="Use the web UI served by the leader, a script (which sends no Origin), "
                "or add that origin to [security] trusted_origins.",
            )

    def _check_body(self, request: IRequest, info: RouteInfo) -> int:
        size = _body_size(request)
        limit, key = (self.limits.upload_bytes, "upload_bytes") if info.upload else (self.limits.json_body_bytes, "json_body_bytes")
        if size > limit:
            raise body_too_large(limit, key)
        return size

    def _signature_to_check(self, request: IRequest, info: RouteInfo) -> bool:
        """Whether the request carries a cluster signature, or must: then its body is hashed and the signature checked."""
        if self.verifier is None:
            return False
        if request.getHeader(SIGNATURE_HEADER) is not None:
            return True  # a forged signature is refused even where none is required
        return (
            request.path.startswith(b"/unit_api/")
            and not info.public
            and (request.method in STATE_CHANGING or (self.sign_reads and not info.by_capability))
        )

    def _check_signature(self, request: IRequest, digest: str) -> None:
        assert self.verifier is not None
        headers = {name: request.getHeader(name) for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)}
        try:
            self.verifier.verify(request.method.decode("ascii"), request.uri.decode("latin-1"), digest, headers)
        except SignatureError as e:
            raise ApiError(
                401,
                "Cluster signature refused.",
                cause=f"This unit requires requests signed with the cluster secret, and {e}.",
                remediation="Send the request through the leader's /api, or check that this unit's "
                "cluster_secret file matches the leader's and that the clocks agree.",
                headers={b"www-authenticate": b'PioreactorHMAC realm="pioreactor cluster"'},
            ) from None

    def _needs_user(self, info: RouteInfo) -> bool:
        if info.public or self.auth == "off":
            return False
        return self.auth == "all" or info.dangerous

    def _check_user(self, request: IRequest) -> Deferred[None] | None:
        header = request.getHeader(b"authorization")
        if header is None:
            raise _unauthorised("This route needs credentials and the request carries none.")
        given, _, value = header.decode("latin-1").partition(" ")
        scheme = given.lower()
        if scheme == "bearer":
            self._throttle(request)
            if self.credentials.check_token(value.strip()):
                return None
            self._failed(request)
            raise _unauthorised("The bearer token is not one this unit knows.")
        if scheme == "basic":
            try:
                username, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _unauthorised("The Basic credentials are not base64 of user:password.") from None
            if self._passwords.knows(username, password):
                return None
            self._throttle(request)
            return self.in_thread(self.credentials.check_password, username, password).addCallback(
                self._password_checked, request, username, password
            )
        raise _unauthorised(f"The Authorization scheme {given[:40]!r} is not one this unit takes.")

    def _password_checked(self, ok: bool, request: IRequest, username: str, password: str) -> None:
        if not ok:
            self._failed(request)
            raise _unauthorised("The user name or password is wrong.")
        self._passwords.remember(username, password)

    def _throttle(self, request: IRequest) -> None:
        """A client that keeps sending wrong credentials is refused before they are checked."""
        wait = self._failures.wait(_client(request))
        if wait is not None:
            raise _too_many("wrong credentials", wait, "auth_failures_per_minute")

    def _failed(self, request: IRequest) -> None:
        self._failures.take(_client(request))
        log.warn("Refused credentials from {client} for {path}", client=_client(request), path=request.path)

    def _check_rate(self, request: IRequest, info: RouteInfo) -> None:
        if not info.expensive:
            return
        wait = self._expensive.take(_client(request))
        if wait is not None:
            raise _too_many("requests to expensive routes", wait, "expensive_per_minute")


def _too_many(what: str, wait: float, key: str) -> ApiError:
    seconds = max(1, int(wait + 0.999))
    return ApiError(
        429,
        "Too many requests.",
        cause=f"This client sent too many {what} in the last minute.",
        remediation=f"Retry after {seconds} s, or raise [limits] {key} in the config.",
        headers={b"retry-after": str(seconds).encode("ascii")},
    )


def build_policy(unit: str, data_dir: Path, config: Config, clock: IReactorTime) -> AppliancePolicy:
    """The policy a unit runs with, from its config and the files in its data directory.

    Raises ``PolicyError`` naming the file or setting that is wrong.
    """
    try:
        return _build_policy(unit, data_dir, config, clock)
    except (SecretError, CredentialsError, ConfigError) as e:
        raise PolicyError(str(e)) from None


def _build_policy(unit: str, data_dir: Path, config: Config, clock: IReactorTime) -> AppliancePolicy:
    own = [unit, config.get("cluster.addresses", unit) or ""]
    if config.leader_hostname == unit:
        own.append(config.get("cluster.topology", "leader_address") or "")
    secret = load_secret(data_dir)
    return AppliancePolicy(
        clock,
        Limits.from_config(config),
        HostCheck.of(own, _items(config.get("security", "allowed_hosts"))),
        frozenset(filter(None, (normalise(o) for o in _items(config.get("security", "trusted_origins"))))),
        auth=(config.get("auth", "require") or "off").strip().lower(),
        credentials=Credentials.load(data_dir),
        verifier=None if secret is None else Verifier(secret, clock, config.get_float("cluster.security", "max_clock_skew_seconds")),
        sign_reads=config.get_bool("cluster.security", "sign_reads"),
    )


def _items(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").replace("\n", ",").split(",") if item.strip()]
