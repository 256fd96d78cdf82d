"""``/unit_api/calibrations...``, ``/unit_api/estimators...`` and their active pointers, on every unit.

Files are the reference's YAML under ``storage/calibrations`` and
``storage/estimators``; which one a device uses is a pointer in the unit's
persistent cache, the same cache the jobs read, so a calibration made active
here is the one the next job run loads. Every file operation runs off the
reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from attrs import define
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..archives import TooLarge
from ..calibration_files import (
    CALIBRATIONS,
    ESTIMATORS,
    Kind,
    read_all,
    read_device,
    read_file,
    remove_file,
    write_file,
    zip_files,
)
from ..calibrations import CalibrationError, valid_name
from ..errors import ApiError
from ..jobs.unit_state import PersistentCache
from ..limits import Limits
from .caching import cache_for
from .routing import Reply, route
from .shapes import Success

T = TypeVar("T")
READ_MAX_AGE = 10  # the reference's Cache-Control for calibration and estimator reads

Item = dict[
    str, Any
]  # a file's fields, plus is_active and pioreactor_unit (and device, for estimators)


@define
class CreateCalibration:
    """The calibration file's YAML text, and whether the device should use it from now on."""

    calibration_data: str
    set_as_active: bool = False


class Created(TypedDict):
    msg: str
    path: str


class Deleted(TypedDict):
    msg: str


NAME_RULE = "Use letters, digits, '.', '_' and '-' (single spaces between words), not starting with '.' or '-'."


def checked(field: str, value: str) -> str:
    """``value`` if it is a plain name (so it cannot leave its directory), else the reference's 400."""
    if not valid_name(value):
        raise ApiError(
            400,
            f"Missing or invalid '{field}'.",
            cause=f"{field.replace('_', ' ').capitalize()} is missing or contains invalid characters.",
            remediation=NAME_RULE,
        )
    return value


def unusable(kind: Kind, device: str, name: str, why: CalibrationError) -> ApiError:
    return ApiError(
        500,
        f"Failed to read {kind.noun} file.",
        cause=f"{kind.noun.capitalize()} {name!r} of {device} cannot be used: {why}",
        remediation=f"Delete it with DELETE /unit_api/{kind.noun}s/{device}/{name}, or upload a corrected one.",
    )


class CalibrationsApi:
    app = Klein()

    def __init__(
        self, data_dir: Path, cache: PersistentCache, unit: str, limits: Limits
    ) -> None:
        self._data_dir = data_dir
        self._cache = cache
        self.unit = unit
        self._limits = limits

    async def _off_thread(self, work: Callable[..., T], *args: Any) -> T:
        return await deferToThread(work, *args)

    def _item(
        self, kind: Kind, device: str, parsed: Item, *, with_device: bool
    ) -> Item:
        name = parsed[kind.name_field]
        item = {
            **parsed,
            "is_active": self._cache.get(kind.namespace, device) == name,
            "pioreactor_unit": self.unit,
        }
        if with_device:
            item["device"] = device
        return item

    # --- shared by calibrations and estimators --------------------------------

    async def _all(self, kind: Kind, with_device: bool) -> dict[str, list[Item]]:
        devices = await self._off_thread(read_all, kind, self._data_dir) or {}
        return {
            device: [
                self._item(kind, device, parsed, with_device=with_device)
                for parsed in files
            ]
            for device, files in devices.items()
        }

    async def _device(
        self, kind: Kind, device: str, with_device: bool
    ) -> list[Item] | None:
        files = await self._off_thread(
            read_device, kind, self._data_dir, checked("device", device)
        )
        if files is None:
            return None
        return [
            self._item(kind, device, parsed, with_device=with_device)
            for parsed in files
        ]

    async def _one(self, kind: Kind, device: str, name: str, with_device: bool) -> Item:
        checked("device", device)
        checked(kind.name_field, name)
        try:
            parsed = await self._off_thread(
                read_file, kind, self._data_dir, device, name
            )
        except CalibrationError as e:
            raise unusable(kind, device, name, e) from None
        if parsed is None:
            raise self._missing(kind, device, name)
        return self._item(kind, device, parsed, with_device=with_device)

    def _missing(self, kind: Kind, device: str, name: str) -> ApiError:
        error = f"{kind.noun.capitalize()} file does not exist."
        if kind is ESTIMATORS:
            error = f"Estimator '{name}' not found for device '{device}'."
        return ApiError(
            404,
            error,
            cause=f"{device} has no {kind.noun} named {name!r} on {self.unit}.",
            remediation=f"List them with GET /unit_api/{kind.noun}s/{device}.",
        )

    async def _delete(self, kind: Kind, device: str, name: str) -> Deleted:
        checked("device", device)
        checked(kind.name_field, name)
        if not await self._off_thread(remove_file, kind, self._data_dir, device, name):
            raise self._missing(kind, device, name)
        if self._cache.get(kind.namespace, device) == name:
            await self._cache.set(kind.namespace, device, None)
        return {
            "msg": f"{kind.noun.capitalize()} '{name}' for device '{device}' deleted successfully."
        }

    async def _active(self, kind: Kind) -> dict[str, Item]:
        pointers = self._cache.items(kind.namespace)

        def load() -> dict[str, Item]:
            found = {}
            for device, name in pointers.items():
                try:
                    parsed = read_file(kind, self._data_dir, device, name)
                except (CalibrationError, ValueError):
                    continue  # an unreadable active file: listed by neither route, as the reference
                if parsed is not None:
                    found[device] = parsed
            return found

        loaded = await self._off_thread(load)
        return {
            device: self._item(kind, device, parsed, with_device=False)
            for device, parsed in loaded.items()
        }

    async def _activate(self, kind: Kind, device: str, name: str) -> Success:
        checked("device", device)
        checked(kind.name_field, name)
        try:
            parsed = await self._off_thread(
                read_file, kind, self._data_dir, device, name
            )
        except CalibrationError as e:
            raise ApiError(
                409,
                f"{kind.noun.capitalize()} cannot be made active.",
                cause=f"{name!r} of {device} cannot be used: {e}",
                remediation="Upload a corrected file first.",
            ) from None
        if parsed is None:
            raise self._missing(kind, device, name)
        await self._cache.set(kind.namespace, device, name)
        return {"status": "success"}

    async def _deactivate(self, kind: Kind, device: str) -> Success:
        await self._cache.set(kind.namespace, checked("device", device), None)
        return {"status": "success"}

    # --- calibrations -----------------------------------------------------------

    @route(app, "/unit_api/calibrations", ["GET"], returns=dict[str, list[Item]])
    async def calibrations(self, request: IRequest) -> dict[str, list[Item]]:
        """Every usable calibration, by device; files that cannot be parsed are logged and left out."""
        cache_for(request, READ_MAX_AGE)
        return await self._all(CALIBRATIONS, with_device=False)

    @route(app, "/unit_api/calibrations/<device>", ["GET"], returns=list[Item])
    async def device_calibrations(self, request: IRequest, device: str) -> list[Item]:
        """The device's usable calibrations."""
        cache_for(request, READ_MAX_AGE)
        found = await self._device(CALIBRATIONS, device, with_device=False)
        if found is None:
            raise ApiError(
                404,
                "Calibration directory does not exist.",
                cause=f"{self.unit} has no calibrations for {device}.",
                remediation=f"Upload one with POST /unit_api/calibrations/{device}, or list devices with GET /unit_api/calibrations.",
            )
        return found

    @route(
        app, "/unit_api/calibrations/<device>/<calibration_name>", ["GET"], returns=Item
    )
    async def calibration(
        self, request: IRequest, device: str, calibration_name: str
    ) -> Item:
        """One calibration, with whether its device uses it."""
        cache_for(request, READ_MAX_AGE)
        return await self._one(
            CALIBRATIONS, device, calibration_name, with_device=False
        )

    @route(
        app,
        "/unit_api/calibrations/<device>",
        ["POST"],
        body=CreateCalibration,
        returns=Created,
        status=201,
        dangerous=True,
    )
    async def create(
        self, request: IRequest, device: str, body: CreateCalibration
    ) -> Reply:
        """Store a calibration file (replacing one of the same name), checked first; optionally make it active.

        The file is named by its calibration_name and stored as sent.
        """
        checked("device", device)

        def store() -> tuple[str, Path]:
            parsed = CALIBRATIONS.parse(body.calibration_data, device)
            name = parsed["calibration_name"]
            return name, write_file(
                CALIBRATIONS, self._data_dir, device, name, body.calibration_data
            )

        try:
            name, path = await self._off_thread(store)
        except CalibrationError as e:
            raise ApiError(
                400,
                "Invalid calibration.",
                cause=str(e),
                remediation="Fix the file and send it again; GET /unit_api/calibrations shows working ones.",
            ) from None
        if body.set_as_active:
            await self._cache.set(CALIBRATIONS.namespace, device, name)
        return Reply(
            {"msg": "Calibration created successfully.", "path": str(path)}, code=201
        )

    @route(
        app,
        "/unit_api/calibrations/<device>/<calibration_name>",
        ["DELETE"],
        returns=Deleted,
        dangerous=True,
    )
    async def delete(
        self, request: IRequest, device: str, calibration_name: str
    ) -> Deleted:
        """Delete a calibration file; if its device was using it, the device has no active calibration after."""
        return await self._delete(CALIBRATIONS, device, calibration_name)

    @route(app, "/unit_api/active_calibrations", ["GET"], returns=dict[str, Item])
    async def active_calibrations(self, request: IRequest) -> dict[str, Item]:
        """The calibration each device uses; pointers to files that cannot be read are left out."""
        cache_for(request, READ_MAX_AGE)
        return await self._active(CALIBRATIONS)

    @route(
        app,
        "/unit_api/active_calibrations/<device>/<calibration_name>",
        ["PATCH"],
        returns=Success,
    )
    async def activate(
        self, request: IRequest, device: str, calibration_name: str
    ) -> Success:
        """Make the device use this calibration from its jobs' next start; the file must exist and be usable."""
        return await self._activate(CALIBRATIONS, device, calibration_name)

    @route(app, "/unit_api/active_calibrations/<device>", ["DELETE"], returns=Success)
    async def deactivate(self, request: IRequest, device: str) -> Success:
        """Make the device use no calibration; idempotent."""
        return await self._deactivate(CALIBRATIONS, device)

    @route(
        app, "/unit_api/zipped_calibrations", ["GET"], returns=str, media=("application/zip",)
    )
    async def zipped(self, request: IRequest) -> Reply:
        """Every calibration file as it is stored, zipped as <device>/<name>.yaml."""
        try:
            archive = await self._off_thread(zip_files, CALIBRATIONS, self._data_dir, self._limits)
        except TooLarge as e:
            raise ApiError(
                413,
                "Too many calibrations to zip.",
                cause=f"The calibrations hold {e}.",
                remediation="Delete calibrations no longer needed, or raise [limits] zip_entries / zip_uncompressed_bytes.",
            ) from None
        if archive is None:
            raise ApiError(
                404,
                "Calibration directory does not exist.",
                cause=f"{self.unit} has no calibrations yet.",
                remediation="Upload one with POST /unit_api/calibrations/<device>.",
            )
        disposition = f'attachment; filename="{self.unit}_calibrations.zip"'.encode()
        return Reply(
            archive,
            content_type=b"application/zip",
            headers={b"content-disposition": disposition},
        )

    # --- estimators -------------------------------------------------------------

    @route(app, "/unit_api/estimators", ["GET"], returns=dict[str, list[Item]])
    async def estimators(self, request: IRequest) -> dict[str, list[Item]]:
        """Every usable estimator, by device."""
        cache_for(request, READ_MAX_AGE)
        return await self._all(ESTIMATORS, with_device=True)

    @route(app, "/unit_api/estimators/<device>", ["GET"], returns=list[Item])
    async def device_estimators(self, request: IRequest, device: str) -> list[Item]:
        """The device's usable estimators; none is an empty list."""
        cache_for(request, READ_MAX_AGE)
        return await self._device(ESTIMATORS, device, with_device=True) or []

    @route(app, "/unit_api/estimators/<device>/<estimator_name>", ["GET"], returns=Item)
    async def estimator(
        self, request: IRequest, device: str, estimator_name: str
    ) -> Item:
        """One estimator, with whether its device uses it."""
        cache_for(request, READ_MAX_AGE)
        return await self._one(ESTIMATORS, device, estimator_name, with_device=True)

    @route(
        app,
        "/unit_api/estimators/<device>/<estimator_name>",
        ["DELETE"],
        returns=Deleted,
        dangerous=True,
    )
    async def delete_estimator(
        self, request: IRequest, device: str, estimator_name: str
    ) -> Deleted:
        """Delete an estimator file; if its device was using it, the device has no active estimator after."""
        return await self._delete(ESTIMATORS, device, estimator_name)

    @route(app, "/unit_api/active_estimators", ["GET"], returns=dict[str, Item])
    async def active_estimators(self, request: IRequest) -> dict[str, Item]:
        """The estimator each device uses."""
        cache_for(request, READ_MAX_AGE)
        return await self._active(ESTIMATORS)

    @route(
        app,
        "/unit_api/active_estimators/<device>/<estimator_name>",
        ["PATCH"],
        returns=Success,
    )
    async def activate_estimator(
        self, request: IRequest, device: str, estimator_name: str
    ) -> Success:
        """Make the device use this estimator; the file must exist and be usable."""
        return await self._activate(ESTIMATORS, device, estimator_name)

    @route(app, "/unit_api/active_estimators/<device>", ["DELETE"], returns=Success)
    async def deactivate_estimator(self, request: IRequest, device: str) -> Success:
        """Make the device use no estimator; idempotent."""
        return await self._deactivate(ESTIMATORS, device)
