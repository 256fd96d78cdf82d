"""API tokens and user passwords, stored only as hashes in ``credentials.json``.

Tokens are long random strings, so one SHA-256 is enough to store them and
checking one is cheap. Passwords are chosen by people, so they are stored as
scrypt hashes, which are slow on purpose; the policy checks them off the
reactor thread and remembers recent successes for a few minutes so a browser
that sends Basic credentials on every request does not pay scrypt each time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from attrs import evolve, frozen

from ..atomic_files import write_atomically

CREDENTIALS_FILE = "credentials.json"
TOKEN_PREFIX = "pio_"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class CredentialsError(Exception):
    """The credentials file exists but cannot be used."""


@frozen
class Token:
    name: str
    sha256: str


@frozen
class User:
    username: str
    salt: str
    hash: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)


@frozen
class Credentials:
    """Everything that can authenticate a user; empty means nobody can."""

    tokens: tuple[Token, ...] = ()
    users: tuple[User, ...] = ()

    @classmethod
    def load(cls, data_dir: Path) -> Credentials:
        path = data_dir / CREDENTIALS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise CredentialsError(f"cannot read {path}: {e}") from None
        try:
            return cls(
                tuple(Token(**t) for t in raw.get("tokens", [])),
                tuple(User(**u) for u in raw.get("users", [])),
            )
        except (TypeError, AttributeError) as e:
            raise CredentialsError(f"{path} is not a credentials file: {e}") from None

    def dumps(self) -> str:
        data: dict[str, Any] = {
            "tokens": [{"name": t.name, "sha256": t.sha256} for t in self.tokens],
            "users": [{"username": u.username, "salt": u.salt, "hash": u.hash, "n": u.n, "r": u.r, "p": u.p} for u in self.users],
        }
        return json.dumps(data, indent=2)

    def save(self, data_dir: Path) -> Path:
        """Write atomically, readable by the owner only."""
        path = data_dir / CREDENTIALS_FILE
        write_atomically(path, self.dumps(), mode=0o600)
        return path

    @property
    def empty(self) -> bool:
        return not self.tokens and not self.users

    def with_token(self, name: str) -> tuple[Credentials, str]:
        """A new random token under ``name``; the token itself is returned once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        kept = tuple(t for t in self.tokens if t.name != name)
        return evolve(self, tokens=(*kept, Token(name, token_digest(token)))), token

    def with_password(self, username: str, password: str) -> Credentials:
        salt = secrets.token_bytes(16)
        user = User(username, salt.hex(), scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).hex())
        kept = tuple(u for u in self.users if u.username != username)
        return evolve(self, users=(*kept, user))

    def without(self, name: str) -> Credentials:
        """Drop the token or user called ``name``."""
        return evolve(
            self,
            tokens=tuple(t for t in self.tokens if t.name != name),
            users=tuple(u for u in self.users if u.username != name),
        )

    def check_token(self, token: str) -> bool:
        digest = token_digest(token)
        matches = [hmac.compare_digest(digest, t.sha256) for t in self.tokens]
        return any(matches)

    def check_password(self, username: str, password: str) -> bool:
        """Slow on purpose: call it off the reactor thread."""
        for user in self.users:
            if hmac.compare_digest(user.username.encode("utf-8"), username.encode("utf-8")):
                computed = scrypt(password, bytes.fromhex(user.salt), user.n, user.r, user.p)
                return hmac.compare_digest(computed.hex(), user.hash)
        scrypt(password, b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)  # an unknown name takes as long as a known one
        return False
