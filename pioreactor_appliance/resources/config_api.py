"""``/unit_api/config/...``: the config this unit would start with, and its own ``unit_config.ini``.

The process reads its config once, at start; an edit is saved for the next
start, and the answer says whether this one differs from what runs now. An
edit that does not parse, or that would stop the unit from starting, is
refused with the file and line, and the file on disk is never half-written:
the text goes to a temporary file beside it, is read back and parsed, synced,
then renamed over the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TypedDict

from attrs import frozen
from klein import Klein
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..config import DEFAULTS, SHARED_NAME, UNIT_NAME, Config, ConfigError, parse_text
from ..errors import ApiError
from ..hardware.unit import HardwareSettings
from ..limits import Limits
from .routing import Reply, route

# Values of options named like these are never served: the reference served the broker's password.
SECRET_WORDS = ("password", "secret", "api_key", "apikey", "token")
REDACTED = "<redacted>"


@frozen
class ConfigEdit:
    """The whole new text of ``unit_config.ini``."""

    code: str


class ConfigSaved(TypedDict):
    """Saved for the next start; ``restart_required`` says whether that start would change anything."""

    status: str
    restart_required: bool
    message: str


def _plain(section: dict[str, str | None]) -> dict[str, str]:
    return {key: "" if value is None else value for key, value in section.items()}


def merged_shape(config: Config) -> dict[str, dict[str, str]]:
    """Sections as the reference's merged config shows them, with its derived sections and without secrets."""
    sections = {name: _plain(values) for name, values in config.sections.items()}
    for values in sections.values():
        for key in values:
            if values[key] and any(word in key.lower() for word in SECRET_WORDS):
                values[key] = REDACTED
    if "od_config.photodiode_channel" in sections:
        sections["od_config.photodiode_channel"] = {
            k: v for k, v in sections["od_config.photodiode_channel"].items() if v
        }
    for name in ("leds", "PWM"):
        if name in sections:
            sections[f"{name}_reverse"] = {v: k for k, v in sections[name].items() if v}
    leader = sections.get("cluster.topology", {}).get("leader_hostname")
    address = sections.get("cluster.topology", {}).get("leader_address")
    if leader and address:
        sections.setdefault("cluster.addresses", {})[leader] = address
    return sections


def _check_startable(config: Config) -> None:
    """What ``twistd pioreactor`` checks of a config before it starts, short of reading other files."""
    try:
        config.leader_hostname  # noqa: B018
        config.get_int("mqtt", "broker_port")
        Limits.from_config(config)
        HardwareSettings.from_config(config)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise ApiError(
            400,
            "The config would not start the unit.",
            cause=str(e),
            remediation="Fix the setting; the file was not changed.",
        ) from None


def _bad_text(e: ConfigError) -> ApiError:
    return ApiError(
        400,
        "Incorrect syntax in the config.",
        cause=str(e),
        remediation="Fix that line; the file was not changed.",
    )


def _write_checked(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that the file is either the old one or the whole new one."""
    fd, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        parse_text(
            Path(temporary).read_text(encoding="utf-8"), path.name
        )  # what is on disk is what was checked
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


class ConfigApi:
    app = Klein()

    def __init__(self, data_dir: Path, running: Config) -> None:
        self._data_dir = data_dir
        self._running = running
        self._writing = DeferredLock()

    def _layers(self, unit_text: str | None) -> Config:
        """The shipped defaults, ``config.ini`` and ``unit_config.ini`` (this text, or the file's); runs in a thread."""
        layers = [
            (
                str(DEFAULTS),
                parse_text(DEFAULTS.read_text(encoding="utf-8"), str(DEFAULTS)),
            )
        ]
        shared = self._data_dir / SHARED_NAME
        if shared.exists():
            layers.append(
                (
                    SHARED_NAME,
                    parse_text(shared.read_text(encoding="utf-8"), SHARED_NAME),
                )
            )
        if unit_text is None:
            unit = self._data_dir / UNIT_NAME
            unit_text = unit.read_text(encoding="utf-8") if unit.exists() else None
        if unit_text is not None:
            layers.append((UNIT_NAME, parse_text(unit_text, UNIT_NAME)))
        return Config.merge(layers)

    @route(app, "/unit_api/config/merged", ["GET"], returns=dict[str, dict[str, str]])
    async def merged(self, request: IRequest) -> dict[str, dict[str, str]]:
        """The config on disk (shipped defaults < config.ini < unit_config.ini), by section, secrets redacted.

        This is what the unit would start with; the running process read its config at start.
        """
        try:
            config = await deferToThread(self._layers, None)
        except (ConfigError, OSError, UnicodeDecodeError) as e:
            raise ApiError(
                500,
                "Failed to read merged config",
                cause=str(e),
                remediation="Fix the file on the unit.",
            ) from None
        return merged_shape(config)

    @route(
        app, "/unit_api/config/specific", ["GET"], returns=str, media=("text/plain",)
    )
    async def specific(self, request: IRequest) -> Reply:
        """This unit's unit_config.ini as text ("" when there is none)."""
        path = self._data_dir / UNIT_NAME

        def read() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return b""

        try:
            text = await deferToThread(read)
        except OSError as e:
            raise ApiError(
                503,
                "unit_config.ini could not be read.",
                cause=str(e),
                remediation="Check the unit's storage.",
            ) from None
        return Reply(
            text,
            content_type=b"text/plain; charset=utf-8",
            headers={b"cache-control": b"no-store"},
        )

    @route(
        app,
        "/unit_api/config/specific",
        ["PATCH", "POST"],
        body=ConfigEdit,
        returns=ConfigSaved,
    )
    async def save_specific(self, request: IRequest, body: ConfigEdit) -> ConfigSaved:
        """Replace unit_config.ini, once it parses and merges into a config the unit can start with.

        400 names the file and line of a syntax error, or the setting that would not start the unit;
        the file is then left as it was. Takes effect at the next start of the appliance.
        """
        text = body.code.replace("\u2013", "-").replace("\u2014", "-")
        try:
            await deferToThread(parse_text, text, UNIT_NAME)
        except ConfigError as e:
            raise _bad_text(e) from None
        try:
            merged = await deferToThread(self._layers, text)
        except (ConfigError, OSError, UnicodeDecodeError) as e:
            raise ApiError(
                503,
                "The shared config could not be read.",
                cause=str(e),
                remediation="Fix config.ini on the unit.",
            ) from None
        _check_startable(merged)
        await self._writing.run(
            deferToThread, _write_checked, self._data_dir / UNIT_NAME, text
        )
        changed = merged.sections != self._running.sections
        message = (
            "Saved; it takes effect when the appliance restarts (the running process read its config at start)."
            if changed
            else "Saved; the running config is already the same."
        )
        return {"status": "success", "restart_required": changed, "message": message}
