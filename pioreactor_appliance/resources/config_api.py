"""``/unit_api/config/...``: the config this unit would start with, and its own ``unit_config.ini``.

The process reads its config once, at start; an edit is saved for the next
start, and the answer says whether this one differs from what runs now. An
edit that does not parse, or that would stop the unit from starting, is
refused with the file and line, and the file on disk is never half-written:
the text goes to a temporary file beside it, is read back and parsed, synced,
then renamed over the old one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from attrs import field, frozen
from klein import Klein
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..config import (
    DEFAULTS,
    SHARED_NAME,
    UNIT_NAME,
    Config,
    ConfigError,
    check_shared,
    parse_text,
    write_checked,
)
from ..errors import ApiError
from ..hardware.unit import HardwareSettings
from ..limits import Limits
from .routing import Reply, route

# Values of options named like these are never served: the reference served the broker's password.
SECRET_WORDS = ("password", "secret", "api_key", "apikey", "token")
REDACTED = "<redacted>"


CONFIG_MAX_CHARACTERS = 256 * 1024


def _bounded(instance: Any, attribute: Any, value: str) -> None:
    if len(value) > CONFIG_MAX_CHARACTERS:
        raise ValueError(f"{attribute.name}: a config file is at most {CONFIG_MAX_CHARACTERS} characters, not {len(value)}")


@frozen
class ConfigEdit:
    """The whole new text of a config file."""

    code: str = field(validator=_bounded, metadata={"json_schema": {"maxLength": CONFIG_MAX_CHARACTERS}})


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


def check_startable(config: Config) -> None:
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


def syntax_error(e: ConfigError) -> ApiError:
    return ApiError(
        400,
        "Incorrect syntax in the config.",
        cause=str(e),
        remediation="Fix that line; the file was not changed.",
    )


def layers(data_dir: Path, *, shared_text: str | None = None, unit_text: str | None = None) -> Config:
    """The shipped defaults, ``config.ini`` and ``unit_config.ini`` (the given texts, else the files); blocking."""
    found = [(str(DEFAULTS), parse_text(DEFAULTS.read_text(encoding="utf-8"), str(DEFAULTS)))]
    for name, text in ((SHARED_NAME, shared_text), (UNIT_NAME, unit_text)):
        if text is None:
            path = data_dir / name
            text = path.read_text(encoding="utf-8") if path.exists() else None
        if text is not None:
            found.append((name, parse_text(text, name)))
    return Config.merge(found)


def parse_shared(text: str) -> None:
    """Blocking: 400 unless ``text`` parses and holds what every unit needs of ``config.ini``."""
    try:
        check_shared(parse_text(text, SHARED_NAME))
    except ConfigError as e:
        raise syntax_error(e) from None


async def check_new_config(data_dir: Path, *, shared_text: str | None = None, unit_text: str | None = None) -> Config:
    """400 unless the new text parses and, merged with this unit's other files, would start the unit."""
    try:
        if shared_text is not None:
            await deferToThread(parse_shared, shared_text)
        if unit_text is not None:
            await deferToThread(parse_text, unit_text, UNIT_NAME)
    except ConfigError as e:
        raise syntax_error(e) from None
    try:
        merged = await deferToThread(layers, data_dir, shared_text=shared_text, unit_text=unit_text)
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        other = UNIT_NAME if shared_text is not None else SHARED_NAME
        raise ApiError(
            503,
            f"The unit's {other} could not be read.",
            cause=str(e),
            remediation=f"Fix {other} on the unit.",
        ) from None
    check_startable(merged)
    return merged


class ConfigApi:
    app = Klein()

    def __init__(self, data_dir: Path, running: Config, writing: DeferredLock | None = None) -> None:
        self._data_dir = data_dir
        self._running = running
        self._writing = writing or DeferredLock()

    def _layers(self, unit_text: str | None) -> Config:
        return layers(self._data_dir, unit_text=unit_text)

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
        dangerous=True,
    )
    async def save_specific(self, request: IRequest, body: ConfigEdit) -> ConfigSaved:
        """Replace unit_config.ini, once it parses and merges into a config the unit can start with.

        400 names the file and line of a syntax error, or the setting that would not start the unit;
        the file is then left as it was. Takes effect at the next start of the appliance.
        """
        text = body.code.replace("\u2013", "-").replace("\u2014", "-")
        merged = await check_new_config(self._data_dir, unit_text=text)
        return await self._save(UNIT_NAME, text, merged)

    @route(app, "/unit_api/config/shared", ["PATCH"], body=ConfigEdit, returns=ConfigSaved, dangerous=True)
    async def save_shared(self, request: IRequest, body: ConfigEdit) -> ConfigSaved:
        """Replace this unit's copy of the cluster's config.ini (the leader sends it after an edit there).

        The same checks as unit_config.ini, plus the fields every unit needs
        ([cluster.topology] leader_hostname and leader_address, [mqtt]); an
        addition to the reference, which copied the file over SSH.
        """
        text = body.code.replace("\u2013", "-").replace("\u2014", "-")
        merged = await check_new_config(self._data_dir, shared_text=text)
        return await self._save(SHARED_NAME, text, merged)

    async def _save(self, name: str, text: str, merged: Config) -> ConfigSaved:
        await self._writing.run(deferToThread, write_checked, self._data_dir / name, text)
        changed = merged.sections != self._running.sections
        message = (
            "Saved; it takes effect when the appliance restarts (the running process read its config at start)."
            if changed
            else "Saved; the running config is already the same."
        )
        return {"status": "success", "restart_required": changed, "message": message}
