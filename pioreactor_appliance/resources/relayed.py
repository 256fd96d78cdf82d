"""A single named unit's failed answer as the leader's own error, for routes that relay one unit synchronously."""

from __future__ import annotations

from typing import Any

from ..errors import ApiError

UNIT_FAILED = 424  # Failed Dependency: the request was good, the unit it needs did not do its part


def unit_error(envelope: dict[str, Any]) -> ApiError:
    """The unit's own 4xx relayed as it is; anything else (off, timed out, a 5xx) 424, never a 5xx of the leader's."""
    error = envelope["error"]
    code = envelope.get("status_code")
    return ApiError(
        code if isinstance(code, int) and 400 <= code < 500 else UNIT_FAILED,
        error["message"],
        cause=error.get("cause") or f"{envelope['unit']} did not answer ({error['kind']}).",
        remediation=error.get("remediation") or "Check that the unit is on and reachable, then retry.",
    )
