"""The one error type every route raises, and its JSON shape.

The unit seed shows a flat body (``error``, ``cause``, ``remediation``,
``status``) and the leader seed a nested ``error_info``; existing clients read
either, so every error carries both.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field


@define
class ApiError(Exception):
    """A failure a client can act on: status code, what went wrong, what to do."""

    status: int
    error: str
    cause: str | None = field(default=None, kw_only=True)
    remediation: str | None = field(default=None, kw_only=True)
    headers: dict[bytes, bytes] = field(factory=dict, kw_only=True)

    def __str__(self) -> str:
        return self.error

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.error, self.cause, self.remediation)


def error_body(
    status: int, error: str, cause: str | None = None, remediation: str | None = None
) -> dict[str, Any]:
    cause = cause or error
    body: dict[str, Any] = {"error": error, "cause": cause, "status": status}
    info: dict[str, Any] = {"cause": cause, "status": status}
    if remediation:
        body["remediation"] = remediation
        info["remediation"] = remediation
    body["error_info"] = info
    return body


def not_found(what: str, remediation: str) -> ApiError:
    return ApiError(404, f"{what} not found.", remediation=remediation)


def bad_request(error: str, remediation: str, cause: str | None = None) -> ApiError:
    return ApiError(400, error, cause=cause, remediation=remediation)
