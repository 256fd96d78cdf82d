"""The units' archives through the leader: zipped data directories and calibrations, and an archive re-posted to import.

These answer synchronously with the zip itself, as the reference's do. Every
unit is fetched concurrently with its own timeout, each answer is bounded by
``[limits] zip_uncompressed_bytes`` and all of them together by the same bound,
and the zips are built off the reactor thread. With ``$broadcast`` a unit that
fails is left out and named: in the ``X-Pioreactor-Failed-Units`` header and in
``failed_units.json`` inside the zip (its envelope, unit by unit).
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from .. import archives
from ..bodies import form_file_body, read_form_file
from ..errors import ApiError
from ..fanout import MAX_RESPONSE_BYTES, ByteBudget, FanOut, Relayed, UnitFailure
from ..limits import Limits
from ..store.database import Database
from ..tasks import Accepted
from .names import BROADCAST
from .relayed import UNIT_FAILED, unit_error
from .routing import Reply, route
from .targets import cluster_targets, worker_targets

FAILED_HEADER = b"x-pioreactor-failed-units"
FAILED_FILE = "failed_units.json"  # unit names hold no dot, so this never meets a <unit>/ folder
INNER_NAME = "dot_pioreactor.zip"


def _zip_reply(data: bytes, filename: str, failed: dict[str, dict[str, Any]] | None = None) -> Reply:
    headers = {b"content-disposition": f'attachment; filename="{filename}"'.encode(), b"cache-control": b"no-store"}
    if failed:
        headers[FAILED_HEADER] = ",".join(sorted(failed)).encode()
    return Reply(data, content_type=b"application/zip", headers=headers)


def _failed_note(failed: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {FAILED_FILE: json.dumps(dict(sorted(failed.items())), indent=2)} if failed else {}


def _split(envelopes: dict[str, dict[str, Any]]) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """The units that sent a non-empty zip, and the envelopes of those that did not."""
    fetched: dict[str, bytes] = {}
    failed: dict[str, dict[str, Any]] = {}
    for unit, envelope in envelopes.items():
        if envelope["ok"] and envelope["value"]:
            fetched[unit] = envelope["value"]
        elif envelope["ok"]:
            failed[unit] = UnitFailure("invalid_response", f"{unit} sent an empty archive.").envelope(unit)
        else:
            failed[unit] = envelope
    return fetched, failed


def _merge_calibrations(fetched: dict[str, bytes], failed: dict[str, dict[str, Any]], limits: Limits) -> bytes:
    """Blocking: every worker's calibration files under ``<worker>/``; refused zips join ``failed``."""
    merged, refused = archives.merge_prefixed(fetched, limits)
    for unit, why in refused.items():
        failed[unit] = UnitFailure("invalid_response", f"{unit}'s calibrations were left out.", cause=why).envelope(unit)
    for name, text in _failed_note(failed).items():
        merged = archives.add_file(merged, name, text)
    return merged


class UnitArchivesApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        fanout: FanOut,
        limits: Limits,
        leader_hostname: str,
        *,
        archive_timeout: float,
        import_timeout: float,
    ) -> None:
        self._db = db
        self._fanout = fanout
        self._limits = limits
        self._leader = leader_hostname
        self._archive_timeout = archive_timeout
        self._import_timeout = import_timeout

    async def _download(self, units: list[str], path: str) -> dict[str, dict[str, Any]]:
        bound = self._limits.zip_uncompressed_bytes
        return await self._fanout.download(units, path, timeout=self._archive_timeout, max_bytes=bound, budget=ByteBudget(bound))

    @route(
        app,
        "/api/units/<unit>/zipped_dot_pioreactor",
        ["GET"],
        returns=str,
        media=("application/zip",),
        expensive=True,
    )
    async def dot_pioreactor(self, request: IRequest, unit: str) -> Reply:
        """One unit's data directory as it exported it (dot_pioreactor.zip), or with $broadcast
        every unit's as <unit>/dot_pioreactor.zip inside cluster_dot_pioreactor.zip.

        A named unit that fails is a 4xx naming why (424 when it did not answer). With $broadcast,
        units that fail are left out and named in X-Pioreactor-Failed-Units and failed_units.json.
        """
        units = await self._db.read(cluster_targets, unit, self._leader)
        fetched, failed = _split(await self._download(units, "/unit_api/zipped_dot_pioreactor"))
        if unit != BROADCAST:
            if failed:
                raise unit_error(failed[unit])
            return _zip_reply(fetched[unit], INNER_NAME)
        data = await deferToThread(archives.nest, fetched, INNER_NAME, _failed_note(failed))
        return _zip_reply(data, "cluster_dot_pioreactor.zip", failed)

    @route(
        app,
        "/api/workers/<unit>/zipped_calibrations",
        ["GET"],
        returns=str,
        media=("application/zip",),
        expensive=True,
    )
    async def calibrations(self, request: IRequest, unit: str) -> Reply:
        """Every calibration file of one worker, or of every worker ($broadcast), as <worker>/<device>/<name>.yaml
        in calibration_yamls.zip.

        A named worker that fails is a 4xx naming why (424 when it did not answer). With $broadcast,
        workers that fail are left out and named in X-Pioreactor-Failed-Units and failed_units.json.
        """
        units = await self._db.read(worker_targets, unit)
        fetched, failed = _split(await self._download(units, "/unit_api/zipped_calibrations"))
        data = await deferToThread(_merge_calibrations, fetched, failed, self._limits)
        if unit != BROADCAST and failed:
            raise unit_error(failed[unit])
        return _zip_reply(data, "calibration_yamls.zip", failed)

    @route(
        app,
        "/api/units/<unit>/import_zipped_dot_pioreactor",
        ["POST"],
        returns=Accepted,
        status=202,
        dangerous=True,
        upload=True,
    )
    async def import_(self, request: IRequest, unit: str) -> Reply:
        """Re-post the archive (multipart field 'archive') to one unit's import route; the unit's answer
        passes through: its 202 names the unit whose /unit_api/task_results/<id> follows the import.

        $broadcast is refused (400): each archive belongs to one unit. 424 when the unit does not answer.
        """
        if unit == BROADCAST:
            raise ApiError(
                400,
                "$broadcast is not accepted here.",
                cause="An exported data directory belongs to one unit.",
                remediation="Name the unit the archive came from, from GET /api/units.",
            )
        await self._db.read(cluster_targets, unit, self._leader)
        upload = await read_form_file(
            request,
            "archive",
            "No archive uploaded",
            "Send the zip as the form field 'archive', e.g. curl -F archive=@unit.zip.",
        )
        body, content_type = await deferToThread(form_file_body, "archive", INNER_NAME, upload)
        envelope = await self._fanout.relay(
            "POST",
            unit,
            "/unit_api/import_zipped_dot_pioreactor",
            body,
            content_type,
            timeout=self._import_timeout,
            max_bytes=MAX_RESPONSE_BYTES,
        )
        if not envelope["ok"]:
            raise unit_error(envelope)
        answer: Relayed = envelope["value"]
        if answer.code >= 500:
            raise ApiError(
                UNIT_FAILED,
                f"{unit} could not import the archive.",
                cause=f"It answered HTTP {answer.code}: {answer.body[:300].decode('utf-8', 'replace')}",
                remediation=f"Check {unit}'s logs, then retry.",
            )
        return Reply(answer.body, code=answer.code, content_type=answer.content_type or b"application/json")
