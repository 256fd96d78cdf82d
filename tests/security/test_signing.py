"""Cluster signatures: what the leader signs, a unit accepts once, within the skew, unaltered."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.security.signing import (
    SECRET_FILE,
    SIGNATURE_HEADER,
    SecretError,
    SignatureError,
    Signer,
    Verifier,
    body_digest,
    load_secret,
    new_secret,
)

SECRET = b"s" * 40


class SigningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.signer = Signer(SECRET, self.clock)
        self.verifier = Verifier(SECRET, self.clock, max_skew=30)

    def headers(self, method: str = "POST", path: str = "/unit_api/jobs/stop", body: bytes = b"{}") -> dict[bytes, bytes | None]:
        return {name: values[0] for name, values in self.signer.headers(method, path, body).items()}

    def verify(self, headers: dict[bytes, bytes | None], method: str = "POST", path: str = "/unit_api/jobs/stop", body: bytes = b"{}") -> None:
        self.verifier.verify(method, path, body_digest(body), headers)

    def test_a_signed_request_passes_once(self) -> None:
        headers = self.headers()
        self.verify(headers)
        with self.assertRaisesRegex(SignatureError, "already used"):
            self.verify(headers)

    def test_the_same_request_twice_has_two_signatures(self) -> None:
        self.verify(self.headers())
        self.verify(self.headers())

    def test_any_alteration_is_refused(self) -> None:
        for method, path, body in [("PUT", "/unit_api/jobs/stop", b"{}"), ("POST", "/unit_api/jobs/stop/all", b"{}"), ("POST", "/unit_api/jobs/stop", b"{ }")]:
            with self.assertRaisesRegex(SignatureError, "does not match"):
                self.verify(self.headers(), method, path, body)

    def test_another_secret_is_refused(self) -> None:
        forged = {name: values[0] for name, values in Signer(b"x" * 40, self.clock).headers("POST", "/unit_api/jobs/stop", b"{}").items()}
        with self.assertRaisesRegex(SignatureError, "does not match"):
            self.verify(forged)

    def test_skew_is_bounded_both_ways(self) -> None:
        old = self.headers()
        self.clock.advance(31)
        with self.assertRaisesRegex(SignatureError, "more than the 30 s"):
            self.verify(old)
        early = Signer(SECRET, Clock())
        early_clock = early.clock
        early_clock.advance(self.clock.seconds() + 31)  # type: ignore[attr-defined]
        with self.assertRaisesRegex(SignatureError, "more than the 30 s"):
            self.verify({name: values[0] for name, values in early.headers("POST", "/unit_api/jobs/stop", b"{}").items()})

    def test_missing_or_malformed_headers_are_refused(self) -> None:
        headers = self.headers()
        with self.assertRaisesRegex(SignatureError, "not signed"):
            self.verify({**headers, SIGNATURE_HEADER: None})
        with self.assertRaisesRegex(SignatureError, "malformed"):
            self.verify({**headers, b"x-pioreactor-timestamp": b"soon"})

    def test_remembered_signatures_are_forgotten_after_the_window(self) -> None:
        for _ in range(5):
            self.verify(self.headers())
            self.clock.advance(20)
        self.assertLessEqual(len(self.verifier._seen), 3)


class SecretFileTests(SynchronousTestCase):
    def test_no_file_means_no_secret(self) -> None:
        self.assertIsNone(load_secret(Path(self.mktemp())))

    def test_a_short_secret_is_refused(self) -> None:
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        (data_dir / SECRET_FILE).write_text("short\n")
        with self.assertRaisesRegex(SecretError, "at least 32"):
            load_secret(data_dir)

    def test_a_new_secret_loads(self) -> None:
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        secret = new_secret()
        (data_dir / SECRET_FILE).write_text(secret + "\n")
        self.assertEqual(load_secret(data_dir), secret.encode())
