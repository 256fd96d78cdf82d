"""``pioreactor-appliance-auth``: create the credentials and the cluster secret.

Passwords are read from the terminal or standard input, never from the command
line, where they would land in the shell history and the process list.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TextIO

from twisted.python import usage

from .credentials import CREDENTIALS_FILE, Credentials, CredentialsError
from .signing import SECRET_FILE, new_secret

RESTART = "Restart the appliance (systemctl restart pioreactor) for this to take effect."


class TokenOptions(usage.Options):
    synopsis = "NAME"

    def parseArgs(self, name: str) -> None:
        self["name"] = name


class PasswordOptions(usage.Options):
    synopsis = "USERNAME"
    optFlags = [["stdin", None, "read the password from one line of standard input"]]

    def parseArgs(self, username: str) -> None:
        if ":" in username:
            raise usage.UsageError("a user name cannot contain ':' (HTTP Basic separates it from the password)")
        self["username"] = username


class RemoveOptions(usage.Options):
    synopsis = "NAME"

    def parseArgs(self, name: str) -> None:
        self["name"] = name


class SecretOptions(usage.Options):
    optFlags = [["force", None, "replace an existing secret (every unit then needs the new one)"]]


class Options(usage.Options):
    optParameters = [["data-dir", None, "~/.pioreactor", "the unit's data directory"]]
    subCommands = [
        ["token", None, TokenOptions, "create an API token called NAME and print it once"],
        ["password", None, PasswordOptions, "set the HTTP Basic password of USERNAME"],
        ["remove", None, RemoveOptions, "remove the token or user called NAME"],
        ["list", None, usage.Options, "list token names and user names"],
        ["secret", None, SecretOptions, f"create the cluster secret file ({SECRET_FILE})"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command")
        self["data-dir"] = Path(self["data-dir"]).expanduser()


def _read_password(options: PasswordOptions, stdin: TextIO) -> str:
    if options["stdin"]:
        password = stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise usage.UsageError("the two passwords differ")
    if len(password) < 8:
        raise usage.UsageError("use a password of at least 8 characters")
    return password


def run(options: Options, stdin: TextIO, stdout: TextIO) -> None:
    data_dir: Path = options["data-dir"]
    data_dir.mkdir(parents=True, exist_ok=True)
    command, sub = options.subCommand, options.subOptions
    if command == "secret":
        path = data_dir / SECRET_FILE
        if path.exists() and not sub["force"]:
            raise usage.UsageError(f"{path} exists; --force replaces it")
        secret = new_secret()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        stdout.write(f"Wrote {path}. Copy this file to the same place on every unit.\n{RESTART}\n")
        return
    credentials = Credentials.load(data_dir)
    if command == "list":
        stdout.writelines(f"token {token.name}\n" for token in credentials.tokens)
        stdout.writelines(f"user {user.username}\n" for user in credentials.users)
        return
    if command == "token":
        credentials, token = credentials.with_token(sub["name"])
        credentials.save(data_dir)
        stdout.write(f"{token}\nThis token is shown once; only its hash is kept in {CREDENTIALS_FILE}.\n{RESTART}\n")
    elif command == "password":
        credentials.with_password(sub["username"], _read_password(sub, stdin)).save(data_dir)
        stdout.write(f"Password set for {sub['username']}. {RESTART}\n")
    elif command == "remove":
        remaining = credentials.without(sub["name"])
        if remaining == credentials:
            raise usage.UsageError(f"no token or user is called {sub['name']!r}")
        remaining.save(data_dir)
        stdout.write(f"Removed {sub['name']}. {RESTART}\n")


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
        run(options, sys.stdin, sys.stdout)
    except (usage.UsageError, CredentialsError) as e:
        sys.stderr.write(f"pioreactor-appliance-auth: {e}\n")
        return 2
    return 0
