"""``/api/models`` and the media and organisms used before: lists a client picks from."""

from __future__ import annotations

from typing import Any, TypedDict

from klein import Klein
from twisted.web.iweb import IRequest

from ..models import BUILT_IN_MODELS, Model
from ..store.database import Database
from ..store.experiments import historical_values
from .routing import route


class Models(TypedDict):
    models: list[Model]


class MediumUsed(TypedDict):
    media_used: str


class OrganismUsed(TypedDict):
    organism_used: str


class CatalogApi:
    app = Klein()

    def __init__(self, db: Database) -> None:
        self._db = db

    @route(app, "/api/models", ["GET"], returns=Models)
    def models(self, request: IRequest) -> Any:
        """The Pioreactor models this appliance knows."""
        return {"models": [model.as_json() for model in BUILT_IN_MODELS]}

    @route(app, "/api/historical_media", ["GET"], returns=list[MediumUsed])
    async def historical_media(self, request: IRequest) -> Any:
        """Media named on earlier experiments, most recent first."""
        return await self._db.read(historical_values, "media_used")

    @route(app, "/api/historical_organisms", ["GET"], returns=list[OrganismUsed])
    async def historical_organisms(self, request: IRequest) -> Any:
        """Organisms named on earlier experiments, most recent first."""
        return await self._db.read(historical_values, "organism_used")
