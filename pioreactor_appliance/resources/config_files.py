"""The leader's config routes: ``/api/config/files/...`` (the seed's), ``/api/config/shared`` and ``/api/config/units/...``.

``config.ini`` is the cluster's shared file: it lives on the leader and every
unit keeps a copy. Each unit also has its own ``unit_config.ini``; the leader's
data directory may still hold the legacy ``config_<unit>.ini`` copies older
versions kept. An edit is checked first (it parses, and merged with the other
layers it would start the unit), written atomically, recorded in
``config_files_histories``, then sent to the units it concerns. The answer
carries each unit's envelope: a unit that is off shows up as its own failed
entry, never as a failed or hanging request (docs/api-deviations.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, TypedDict

from attrs import frozen
from klein import Klein
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from .. import archives
from ..config import SHARED_NAME, UNIT_NAME, ConfigError, write_checked
from ..errors import ApiError
from ..fanout import FanOut, UnitFailure
from ..store.config_histories import ConfigVersion, add_version, versions
from ..store.database import Database
from ..store.workers import cluster_units
from ..timestamps import iso_utc
from .caching import cache_for
from .config_api import (
    CONFIG_MAX_CHARACTERS,
    ConfigEdit,
    check_new_config,
    layers,
    merged_shape,
)
from .leader_cache import MERGED_CONFIG, LeaderCache
from .names import BROADCAST, unit_name_problem
from .relayed import UNIT_FAILED, unit_error
from .routing import Reply, route
from .targets import cluster_targets

TEXT_MAX_AGE = 10  # the reference's Cache-Control for config text
LEGACY = re.compile(r"config_(?P<unit>[A-Za-z0-9_-]{1,63})\.ini")
SERVED_MAX_BYTES = 4 * CONFIG_MAX_CHARACTERS  # UTF-8 takes at most 4 bytes a character


class ConfigSynced(TypedDict):
    """Saved on the leader; ``units`` says, unit by unit, whether each one took it.

    ``status`` is ``success`` when every unit did, ``partial`` when some did not.
    """

    status: Literal["success", "partial"]
    units: dict[str, dict[str, Any]]


class UnitConfigs(TypedDict):
    """Each unit's merged config by section; the units that did not answer, with their envelopes."""

    configs: dict[str, dict[str, dict[str, str]]]
    errors: dict[str, dict[str, Any]]


@frozen
class ConfigFile:
    """A config file of the leader's data directory that a client may name, and whose file it is."""

    name: str
    unit: str | None  # None: the shared config.ini

    @property
    def history_keys(self) -> tuple[str, ...]:
        if self.unit is None:
            return (SHARED_NAME,)
        return (f"{UNIT_NAME}::{self.unit}", f"config_{self.unit}.ini")


def config_file(name: str, leader: str) -> ConfigFile:
    """``config.ini``, ``unit_config.ini`` (the leader's own) or ``config_<unit>.ini``; 400 for anything else."""
    if name == SHARED_NAME:
        return ConfigFile(name, None)
    if name == UNIT_NAME:
        return ConfigFile(name, leader)
    match = LEGACY.fullmatch(name)
    if match is None or unit_name_problem(match["unit"]) is not None:
        raise ApiError(
            400,
            "Invalid config file name.",
            cause=f"{name[:100]!r} is not config.ini, unit_config.ini or config_<unit>.ini.",
            remediation="Use a name from GET /api/config/files.",
        )
    return ConfigFile(name, match["unit"])


def _confined(data_dir: Path, name: str) -> Path:
    """The file ``name`` in ``data_dir``, refused if a link takes it elsewhere."""
    path = data_dir / name
    if path.resolve().parent != data_dir.resolve():
        raise ApiError(
            400,
            "Config file outside the data directory.",
            cause=f"{name} is a link to a file outside the leader's data directory.",
            remediation="Replace the link with the file itself.",
        )
    return path


def _read_text(path: Path) -> str | None:
    """Blocking: the file's text, None when it does not exist."""
    try:
        with path.open("rb") as f:
            raw = f.read(SERVED_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > SERVED_MAX_BYTES:
        raise ApiError(
            409,
            "Config file too large to serve.",
            cause=f"{path.name} is larger than {SERVED_MAX_BYTES} bytes.",
            remediation="Shorten the file on the leader.",
        )
    return raw.decode("utf-8", "replace")


def _text(body: str) -> Reply:
    return Reply(
        body,
        content_type=b"text/plain; charset=utf-8",
        headers={b"cache-control": f"public, max-age={TEXT_MAX_AGE}".encode("ascii")},
    )


def _synced(units: dict[str, dict[str, Any]]) -> ConfigSynced:
    status: Literal["success", "partial"] = "success" if all(e["ok"] for e in units.values()) else "partial"
    return {"status": status, "units": dict(sorted(units.items()))}


def _no_broadcast(unit: str) -> None:
    if unit == BROADCAST:
        raise ApiError(
            400,
            "$broadcast is not accepted here.",
            cause="Each unit has its own unit_config.ini.",
            remediation="Name one unit from GET /api/units.",
        )


class ConfigFilesApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        fanout: FanOut,
        clock: IReactorTime,
        data_dir: Path,
        leader_hostname: str,
        writing: DeferredLock,
        cache: LeaderCache,
    ) -> None:
        self._db = db
        self._fanout = fanout
        self._cache = cache
        self._clock = clock
        self._data_dir = data_dir
        self._leader = leader_hostname
        self._writing = writing

    def _ok(self, unit: str) -> dict[str, dict[str, Any]]:
        return {unit: {"ok": True, "unit": unit, "value": {}}}

    async def _write(self, name: str, text: str) -> None:
        path = _confined(self._data_dir, name)
        try:
            await self._writing.run(deferToThread, write_checked, path, text)
        except (OSError, ConfigError) as e:
            raise ApiError(
                503,
                f"{name} could not be written.",
                cause=str(e),
                remediation="Check the leader's storage; the old file was kept.",
            ) from None

    async def _record(self, key: str, text: str) -> None:
        await self._db.run(add_version, key, iso_utc(self._clock.seconds()), text)

    async def _read_file(self, file: ConfigFile) -> str:
        text = await deferToThread(_read_text, _confined(self._data_dir, file.name))
        if text is None:
            raise ApiError(
                404,
                f"{file.name} not found.",
                cause=f"The leader's data directory has no {file.name}.",
                remediation="Use a name from GET /api/config/files.",
            )
        return text

    async def _history(self, request: IRequest, keys: tuple[str, ...]) -> list[ConfigVersion]:
        cache_for(request, 0)
        return await self._db.read(versions, keys)

    async def _save_shared(self, text: str) -> ConfigSynced:
        """Check, write and record config.ini on the leader, then send it to every other unit."""
        await check_new_config(self._data_dir, shared_text=text)
        await self._write(SHARED_NAME, text)
        await self._record(SHARED_NAME, text)
        units_now = await self._db.read(cluster_units, self._leader)
        self._cache.invalidate(units_now, [MERGED_CONFIG])
        others = [u for u in units_now if u != self._leader]
        units = self._ok(self._leader)
        if others:
            units.update(await self._fanout.request("PATCH", others, "/unit_api/config/shared", json={"code": text}))
            self._cache.invalidate(others, [MERGED_CONFIG])  # reads made while the units were taking it
        return _synced(units)

    async def _save_specific(self, unit: str, text: str, legacy: str | None = None) -> ConfigSynced:
        """Check a unit's unit_config.ini against the shared config, keep it (here or on the unit), record it.

        ``legacy`` names the leader's copy (``config_<unit>.ini``) the seed's route edits; that copy
        is kept even when the unit is off, and the unit's envelope says so. Without a copy, a unit
        that refuses or does not answer fails the request: nothing was saved anywhere.
        """
        await check_new_config(self._data_dir, unit_text=text)
        if legacy is not None:
            await self._write(legacy, text)
        self._cache.invalidate([unit], [MERGED_CONFIG])
        if unit == self._leader:
            await self._write(UNIT_NAME, text)
            units = self._ok(unit)
        else:
            units = await self._fanout.request("PATCH", [unit], "/unit_api/config/specific", json={"code": text})
            self._cache.invalidate([unit], [MERGED_CONFIG])
            if legacy is None and not units[unit]["ok"]:
                raise unit_error(units[unit])
        await self._record(f"{UNIT_NAME}::{unit}", text)
        return _synced(units)

    # The seed's routes (removed by the reference; kept here because the seed shows them).

    @route(app, "/api/config/files", ["GET"], returns=list[str])
    async def files(self, request: IRequest) -> list[str]:
        """The config files a client may read and edit: config.ini, the leader's unit_config.ini, legacy copies of units."""
        units = await self._db.read(cluster_units, self._leader)
        names = [UNIT_NAME, *(f"config_{unit}.ini" for unit in units)]

        def present() -> list[str]:
            return [name for name in names if (self._data_dir / name).is_file()]

        return [SHARED_NAME, *sorted(await deferToThread(present))]

    @route(app, "/api/config/files/<filename>", ["GET"], returns=str, media=("text/plain",))
    async def file(self, request: IRequest, filename: str) -> Reply:
        """One config file of the leader's data directory, as text."""
        return _text(await self._read_file(config_file(filename, self._leader)))

    @route(app, "/api/config/files/<filename>", ["PATCH"], body=ConfigEdit, returns=ConfigSynced, dangerous=True)
    async def save_file(self, request: IRequest, body: ConfigEdit, filename: str) -> ConfigSynced:
        """Replace one config file once it is checked, then send it to the units it concerns.

        config.ini goes to every unit; config_<unit>.ini and unit_config.ini to their unit.
        """
        file = config_file(filename, self._leader)
        text = body.code.replace("\u2013", "-").replace("\u2014", "-")
        if file.unit is None:
            return await self._save_shared(text)
        await self._db.read(cluster_targets, file.unit, self._leader)
        return await self._save_specific(file.unit, text, None if file.name == UNIT_NAME else file.name)

    @route(app, "/api/config/files/<filename>/history", ["GET"], returns=list[ConfigVersion])
    async def file_history(self, request: IRequest, filename: str) -> list[ConfigVersion]:
        """The saved versions of one config file, newest first."""
        return await self._history(request, config_file(filename, self._leader).history_keys)

    # The reference's routes.

    @route(app, "/api/config/shared", ["GET"], returns=str, media=("text/plain",))
    async def shared(self, request: IRequest) -> Reply:
        """The cluster's config.ini, as text."""
        return _text(await self._read_file(ConfigFile(SHARED_NAME, None)))

    @route(app, "/api/config/shared", ["PATCH"], body=ConfigEdit, returns=ConfigSynced, dangerous=True)
    async def save_shared(self, request: IRequest, body: ConfigEdit) -> ConfigSynced:
        """Replace config.ini on the leader and send it to every unit; each unit's envelope says whether it took it."""
        return await self._save_shared(body.code.replace("\u2013", "-").replace("\u2014", "-"))

    @route(app, "/api/config/shared/history", ["GET"], returns=list[ConfigVersion])
    async def shared_history(self, request: IRequest) -> list[ConfigVersion]:
        """The saved versions of config.ini, newest first."""
        return await self._history(request, (SHARED_NAME,))

    @route(app, "/api/config/units/<unit>", ["GET"], returns=UnitConfigs)
    async def unit_configs(self, request: IRequest, unit: str) -> UnitConfigs:
        """Each unit's merged config (``$broadcast``: the leader and every worker); units that fail are under errors.

        A single named unit that fails is this request's error: its own 4xx, else 424. A worker's
        answer is reused for 10 s ([appliance] leader_cache_seconds) until a config edit here.
        """
        units = await self._db.read(cluster_targets, unit, self._leader)
        envelopes: dict[str, dict[str, Any]] = {}
        workers = [u for u in units if u != self._leader]
        if workers:
            envelopes.update(
                await self._cache.read(MERGED_CONFIG, workers, lambda missing: self._fanout.request("GET", missing, "/unit_api/config/merged"))
            )
        if self._leader in units:
            envelopes[self._leader] = await self._leader_merged()
        if unit != BROADCAST and not envelopes[unit]["ok"]:
            raise unit_error(envelopes[unit])
        return {
            "configs": {u: e["value"] for u, e in sorted(envelopes.items()) if e["ok"]},
            "errors": {u: e for u, e in sorted(envelopes.items()) if not e["ok"]},
        }

    async def _leader_merged(self) -> dict[str, Any]:
        try:
            config = await deferToThread(layers, self._data_dir)
        except (ConfigError, OSError, UnicodeDecodeError) as e:
            error = {"kind": "invalid_response", "message": "The leader's config could not be read.", "cause": str(e)}
            return {"ok": False, "unit": self._leader, "error": error, "status_code": None, "retryable": False}
        return {"ok": True, "unit": self._leader, "value": merged_shape(config)}

    @route(app, "/api/config/units/<unit>/specific", ["GET"], returns=str, media=("text/plain",))
    async def unit_specific(self, request: IRequest, unit: str) -> Reply:
        """One unit's unit_config.ini as text ("" when it has none)."""
        _no_broadcast(unit)
        await self._db.read(cluster_targets, unit, self._leader)
        if unit == self._leader:
            text = await deferToThread(_read_text, _confined(self._data_dir, UNIT_NAME))
            return _text(text or "")
        envelope = (await self._fanout.request("GET", [unit], "/unit_api/config/specific"))[unit]
        if not envelope["ok"]:
            raise unit_error(envelope)
        if not isinstance(envelope["value"], str):
            raise ApiError(UNIT_FAILED, f"{unit} did not answer with text.", remediation="Update the appliance on that unit.")
        return _text(envelope["value"])

    @route(app, "/api/config/units/<unit>/specific", ["PATCH"], body=ConfigEdit, returns=ConfigSynced, dangerous=True)
    async def save_unit_specific(self, request: IRequest, body: ConfigEdit, unit: str) -> ConfigSynced:
        """Replace one unit's unit_config.ini once it is checked here and on the unit; 4xx from the unit are relayed."""
        _no_broadcast(unit)
        await self._db.read(cluster_targets, unit, self._leader)
        return await self._save_specific(unit, body.code.replace("\u2013", "-").replace("\u2014", "-"))

    @route(app, "/api/config/zipped", ["GET"], returns=str, media=("application/zip",), expensive=True)
    async def zipped(self, request: IRequest) -> Reply:
        """configuration_inis.zip: config.ini, each unit's <unit>/unit_config.ini, and metadata.json.

        A unit that does not answer is left out and named in ``omitted_units`` (with why), so one
        worker that is off never costs the download of the others.
        """
        units = await self._db.read(cluster_targets, BROADCAST, self._leader)
        shared = await self._read_file(ConfigFile(SHARED_NAME, None))
        texts: dict[str, bytes] = {}
        omitted: dict[str, dict[str, Any]] = {}
        workers = [u for u in units if u != self._leader]
        envelopes = await self._fanout.request("GET", workers, "/unit_api/config/specific") if workers else {}
        for unit, envelope in envelopes.items():
            if envelope["ok"] and isinstance(envelope["value"], str):
                texts[unit] = envelope["value"].encode("utf-8")
            else:
                omitted[unit] = envelope if not envelope["ok"] else UnitFailure("invalid_response", f"{unit} did not answer with text.").envelope(unit)
        if self._leader in units:
            texts[self._leader] = ((await deferToThread(_read_text, _confined(self._data_dir, UNIT_NAME))) or "").encode("utf-8")
        included = [SHARED_NAME, *(f"{unit}/{UNIT_NAME}" for unit in sorted(texts))]
        metadata = {
            "metadata_version": 1,
            "downloaded_at_utc": iso_utc(self._clock.seconds()),
            "included_config_files": included,
            "omitted_units": sorted(omitted),
            "omitted_because": {unit: envelope["error"] for unit, envelope in sorted(omitted.items())},
        }
        extra = {SHARED_NAME: shared, "metadata.json": json.dumps(metadata, indent=2)}
        data = await deferToThread(archives.nest, texts, UNIT_NAME, extra)
        return Reply(
            data,
            content_type=b"application/zip",
            headers={b"content-disposition": b'attachment; filename="configuration_inis.zip"', b"cache-control": b"no-store"},
        )

    @route(app, "/api/config/units/<unit>/specific/history", ["GET"], returns=list[ConfigVersion])
    async def unit_specific_history(self, request: IRequest, unit: str) -> list[ConfigVersion]:
        """The saved versions of one unit's unit_config.ini (and of its legacy config_<unit>.ini), newest first."""
        _no_broadcast(unit)
        problem = unit_name_problem(unit)
        if problem:
            raise ApiError(400, f"Invalid unit name: {unit[:100]}", cause=problem, remediation="Name one unit from GET /api/units.")
        return await self._history(request, ConfigFile(UNIT_NAME, unit).history_keys)
