"""Tokens and passwords: kept as hashes, checked right."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.security.credentials import (
    CREDENTIALS_FILE,
    Credentials,
    CredentialsError,
)


class CredentialsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()

    def test_tokens_and_passwords_are_stored_only_as_hashes(self) -> None:
        credentials, token = Credentials().with_token("ui")
        credentials = credentials.with_password("alice", "correct horse")
        path = credentials.save(self.data_dir)
        text = path.read_text()
        self.assertNotIn(token, text)
        self.assertNotIn("correct horse", text)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        loaded = Credentials.load(self.data_dir)
        self.assertTrue(loaded.check_token(token))
        self.assertFalse(loaded.check_token(token + "x"))
        self.assertTrue(loaded.check_password("alice", "correct horse"))
        self.assertFalse(loaded.check_password("alice", "wrong horse"))
        self.assertFalse(loaded.check_password("bob", "correct horse"))

    def test_replacing_and_removing(self) -> None:
        credentials, first = Credentials().with_token("ui")
        credentials, second = credentials.with_token("ui")
        self.assertFalse(credentials.check_token(first))
        self.assertTrue(credentials.check_token(second))
        self.assertTrue(credentials.without("ui").empty)

    def test_no_file_is_empty(self) -> None:
        self.assertTrue(Credentials.load(self.data_dir).empty)

    def test_a_broken_file_names_itself(self) -> None:
        (self.data_dir / CREDENTIALS_FILE).write_text("{not json")
        with self.assertRaisesRegex(CredentialsError, CREDENTIALS_FILE):
            Credentials.load(self.data_dir)
        (self.data_dir / CREDENTIALS_FILE).write_text(json.dumps({"tokens": [{"name": "ui"}]}))
        with self.assertRaisesRegex(CredentialsError, "not a credentials file"):
            Credentials.load(self.data_dir)
