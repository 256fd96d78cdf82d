"""``/unit_api/calibrations/sessions...`` and ``/unit_api/calibration_protocols``, on every unit.

Bodies are plain JSON objects with extra keys allowed, as the reference reads
them, so they are decoded here rather than by the strict body converter. The
sessions themselves live in ``calibration_sessions.runner``.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from klein import Klein
from twisted.web.iweb import IRequest

from ..calibration_sessions.runner import CalibrationSessions
from ..errors import ApiError
from .caching import cache_for
from .routing import Reply, route

PROTOCOLS_MAX_AGE = 10  # the reference's Cache-Control for calibration_protocols


class CalibrationProtocol(TypedDict):
    id: str
    target_device: str
    protocol_name: str
    priority: int
    title: str
    description: str
    requirements: list[str]


class SessionJson(TypedDict):
    session_id: str
    protocol_name: str
    target_device: str
    status: str
    step_id: str
    data: dict[str, Any]
    created_at: str
    updated_at: str
    result: dict[str, Any] | None
    error: str | None


class FieldJson(TypedDict):
    name: str
    label: str
    field_type: str
    required: bool
    default: Any
    options: list[str] | None
    minimum: float | None
    maximum: float | None
    min_error_msg: str | None
    max_error_msg: str | None
    help_text: str | None


class StepJson(TypedDict):
    step_id: str
    step_type: str
    title: str
    body: str
    fields: list[FieldJson]
    metadata: dict[str, Any]


class SessionView(TypedDict):
    session: SessionJson
    step: StepJson


def payload_of(request: IRequest, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object sent, whatever else it holds; ``empty`` for no body, if given; else the reference's 400."""
    raw = request.content.read() if request.content is not None else b""
    if empty is not None and not raw.strip():
        return empty
    try:
        document = json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise ApiError(
            400,
            "Missing JSON payload.",
            cause="The body must be a JSON object.",
            remediation='Send e.g. {"target_device": "stirring", "protocol_name": "dc_based"}.',
        )
    return document


class CalibrationSessionsApi:
    app = Klein()

    def __init__(self, sessions: CalibrationSessions) -> None:
        self._sessions = sessions

    @route(
        app,
        "/unit_api/calibration_protocols",
        ["GET"],
        returns=list[CalibrationProtocol],
    )
    def protocols(self, request: IRequest) -> list[dict[str, Any]]:
        """The guided calibration protocols this unit can run, by device, priority and title."""
        cache_for(request, PROTOCOLS_MAX_AGE)
        return self._sessions.listing()

    @route(
        app,
        "/unit_api/calibrations/sessions",
        ["POST"],
        returns=SessionView,
        status=201,
    )
    async def create(self, request: IRequest) -> Reply:
        """Start a calibration session: body {"target_device", "protocol_name"}; answers with its first step."""
        payload = payload_of(request)
        for name in ("target_device", "protocol_name"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise ApiError(
                    400,
                    f"Missing '{name}'.",
                    remediation="GET /unit_api/calibration_protocols lists the pairs this unit takes.",
                )
        return Reply(
            await self._sessions.create(
                payload["target_device"], payload["protocol_name"]
            ),
            code=201,
        )

    @route(
        app,
        "/unit_api/calibrations/sessions/<session_id>",
        ["GET"],
        returns=SessionView,
    )
    async def session(self, request: IRequest, session_id: str) -> dict[str, Any]:
        """A session and its current step; an action step's metadata names the task it is running."""
        request.setHeader(b"cache-control", b"no-store")
        return await self._sessions.get(session_id)

    @route(
        app,
        "/unit_api/calibrations/sessions/<session_id>/inputs",
        ["POST"],
        returns=SessionView,
    )
    async def inputs(self, request: IRequest, session_id: str) -> dict[str, Any]:
        """Answer the current step: body {"inputs": {field: value}}.

        Entering a step that drives hardware starts it as a task and answers at
        once; the session moves on by itself when the task ends.
        """
        inputs = payload_of(request, empty={}).get("inputs", {})
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise ApiError(
                400,
                "Invalid 'inputs', expected an object.",
                remediation='Send {"inputs": {"field": value}}.',
            )
        return await self._sessions.inputs(session_id, inputs)

    @route(
        app,
        "/unit_api/calibrations/sessions/<session_id>/abort",
        ["POST"],
        returns=SessionView,
    )
    async def abort(self, request: IRequest, session_id: str) -> dict[str, Any]:
        """End a session as aborted; a running hardware step is stopped and its hardware turned off."""
        return await self._sessions.abort(session_id)
