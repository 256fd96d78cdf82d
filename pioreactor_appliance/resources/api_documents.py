"""``/unit_api/openapi.json`` on every unit and ``/api/openapi.json`` on the leader: the API documents.

Each is generated on each request from the route table, so a document is
always its routes' own. ``families`` are the router's, the document's own
family among them, and are read per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from ..openapi import document
from ..queries import limits_of
from .routing import route, route_table

# Enough for a client to know it got an OpenAPI document; the rest is the OpenAPI 3.1 schema's business.
OPENAPI_DOCUMENT: dict[str, Any] = {
    "type": "object",
    "required": ["openapi", "info", "paths", "components"],
    "properties": {"openapi": {"type": "string", "pattern": "^3\\.1\\."}, "info": {"type": "object"}, "paths": {"type": "object"}},
}


class UnitApiDocument:
    app = Klein()

    def __init__(self, families: Sequence[Any]) -> None:
        self._families = families

    @route(app, "/unit_api/openapi.json", ["GET"], returns=OPENAPI_DOCUMENT)
    def unit_document(self, request: IRequest) -> dict[str, Any]:
        """The OpenAPI 3.1 document of this unit's /unit_api routes."""
        return document(route_table(self._families), "/unit_api", limits_of(request), "Pioreactor unit API")


LEADER_PREFIXES = ("/api", "/exports")  # /exports/<file>: export downloads, where the reference serves them


class LeaderApiDocument:
    app = Klein()

    def __init__(self, families: Sequence[Any]) -> None:
        self._families = families

    @route(app, "/api/openapi.json", ["GET"], returns=OPENAPI_DOCUMENT)
    def leader_document(self, request: IRequest) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the leader's /api routes (and /exports, its downloads)."""
        return document(route_table(self._families), LEADER_PREFIXES, limits_of(request), "Pioreactor leader API")


def api_documents(families: Sequence[Any], leader: bool) -> list[Any]:
    """The document families a unit serves: the leader serves /api's too (a worker's /api is the router's 404)."""
    return [UnitApiDocument(families), *([LeaderApiDocument(families)] if leader else [])]
