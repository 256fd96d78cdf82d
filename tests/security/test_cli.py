"""``pioreactor-appliance-auth``: what it writes, and what it refuses."""

from __future__ import annotations

import io
import stat
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.security.cli import Options, main, run
from pioreactor_appliance.security.credentials import Credentials
from pioreactor_appliance.security.signing import SECRET_FILE, load_secret


class CliTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())

    def run_cli(self, *args: str, stdin: str = "") -> str:
        options = Options()
        options.parseOptions(["--data-dir", str(self.data_dir), *args])
        out = io.StringIO()
        run(options, io.StringIO(stdin), out)
        return out.getvalue()

    def test_token_is_printed_once_and_stored_hashed(self) -> None:
        token = self.run_cli("token", "ui").splitlines()[0]
        self.assertTrue(token.startswith("pio_"))
        self.assertNotIn(token, (self.data_dir / "credentials.json").read_text())
        self.assertTrue(Credentials.load(self.data_dir).check_token(token))

    def test_password_from_stdin(self) -> None:
        self.run_cli("password", "--stdin", "alice", stdin="correct horse\n")
        self.assertTrue(Credentials.load(self.data_dir).check_password("alice", "correct horse"))
        self.assertEqual(self.run_cli("list"), "user alice\n")
        with self.assertRaisesRegex(UsageError, "at least 8"):
            self.run_cli("password", "--stdin", "bob", stdin="short\n")
        with self.assertRaisesRegex(UsageError, "cannot contain ':'"):
            self.run_cli("password", "--stdin", "a:b", stdin="correct horse\n")

    def test_remove(self) -> None:
        self.run_cli("token", "ui")
        self.run_cli("remove", "ui")
        self.assertTrue(Credentials.load(self.data_dir).empty)
        with self.assertRaisesRegex(UsageError, "no token or user"):
            self.run_cli("remove", "ui")

    def test_secret_is_private_and_not_replaced_by_accident(self) -> None:
        self.run_cli("secret")
        path = self.data_dir / SECRET_FILE
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        first = load_secret(self.data_dir)
        with self.assertRaisesRegex(UsageError, "--force"):
            self.run_cli("secret")
        self.run_cli("secret", "--force")
        self.assertNotEqual(load_secret(self.data_dir), first)

    def test_main_reports_errors_with_status_2(self) -> None:
        self.assertEqual(main(["--data-dir", str(self.data_dir)]), 2)
        self.assertEqual(main(["--data-dir", str(self.data_dir), "remove", "nobody"]), 2)
