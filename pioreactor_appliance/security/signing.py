"""The cluster secret: the leader signs its requests, units check the signature.

A signature is an HMAC-SHA256, keyed by the secret, over the method, the path
with its query, the SHA-256 of the body, a Unix timestamp and a random nonce.
A unit accepts it within a bounded clock skew and only once, so a captured
request can be neither altered nor replayed; the nonce lets the leader send
the same request twice in one second (polling a task) with two signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from pathlib import Path

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

SECRET_FILE = "cluster_secret"
MIN_SECRET_CHARS = 32
TIMESTAMP_HEADER = b"x-pioreactor-timestamp"
NONCE_HEADER = b"x-pioreactor-nonce"
SIGNATURE_HEADER = b"x-pioreactor-signature"


class SecretError(Exception):
    """The secret file exists but cannot be used."""


class SignatureError(Exception):
    """Why a signature was refused, in words a client can act on."""


def load_secret(data_dir: Path) -> bytes | None:
    """The cluster secret, or None when the cluster runs without one."""
    path = data_dir / SECRET_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"cannot read {path}: {e}") from None
    if len(text) < MIN_SECRET_CHARS:
        raise SecretError(f"{path} holds {len(text)} characters; a cluster secret needs at least {MIN_SECRET_CHARS}")
    return text.encode("utf-8")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signature(secret: bytes, method: str, path: str, digest: str, timestamp: str, nonce: str) -> str:
    message = "\n".join((method.upper(), path, digest, timestamp, nonce)).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@define
class Signer:
    """What the leader's fan-out adds to every request it sends."""

    secret: bytes
    clock: IReactorTime

    def headers(self, method: str, path: str, body: bytes) -> dict[bytes, list[bytes]]:
        timestamp = str(int(self.clock.seconds()))
        nonce = secrets.token_hex(12)
        mac = signature(self.secret, method, path, body_digest(body), timestamp, nonce)
        return {
            TIMESTAMP_HEADER: [timestamp.encode("ascii")],
            NONCE_HEADER: [nonce.encode("ascii")],
            SIGNATURE_HEADER: [mac.encode("ascii")],
        }


@define
class Verifier:
    """Checks signatures on a unit, remembering the ones it has accepted until they expire."""

    secret: bytes
    clock: IReactorTime
    max_skew: float
    _seen: set[str] = field(factory=set, init=False)
    _expiries: deque[tuple[float, str]] = field(factory=deque, init=False)

    def verify(self, method: str, path: str, digest: str, headers: dict[bytes, bytes | None]) -> None:
        timestamp, nonce, mac = (headers.get(name) for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
        if timestamp is None or nonce is None or mac is None:
            raise SignatureError("the request is not signed with the cluster secret")
        try:
            when = int(timestamp.decode("ascii"))
            given = mac.decode("ascii")
            once = nonce.decode("ascii")
        except (UnicodeDecodeError, ValueError):
            raise SignatureError("the signature headers are malformed") from None
        now = self.clock.seconds()
        if abs(now - when) > self.max_skew:
            raise SignatureError(
                f"the signature's timestamp is {now - when:+.0f} s from this unit's clock, more than the {self.max_skew:g} s allowed"
            )
        expected = signature(self.secret, method, path, digest, str(when), once)
        if not hmac.compare_digest(expected, given):
            raise SignatureError("the signature does not match: a different secret, or an altered request")
        self._forget_expired(now)
        if given in self._seen:
            raise SignatureError("this signed request was already used once")
        self._seen.add(given)
        self._expiries.append((when + self.max_skew, given))

    def _forget_expired(self, now: float) -> None:
        """Signatures past the skew window are refused by their timestamp; stop remembering them."""
        while self._expiries and self._expiries[0][0] < now:
            self._seen.discard(self._expiries.popleft()[1])
