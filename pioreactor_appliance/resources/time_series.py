"""``/api/.../time_series/...`` and ``/api/experiments/<e>/media_rates``: chart data, in the reference's shapes.

Reads run on the database's reader threads. The named sources are answered
from recent series kept in memory (store/series_cache.py: a few ms per answer
whatever the table's size); the generic ``<data_source>/<column>`` route reads
SQLite. Identical requests may also share one answer for
:data:`SHARED_SECONDS` (see answer_cache); docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..store import time_series as store
from ..store.database import Database
from ..store.series_cache import SeriesCache
from ..timestamps import iso_utc
from .answer_cache import AnswerCache
from .caching import cache_for
from .routing import Reply, route

SHARED_SECONDS = 2.0  # under the 5 s a browser may already reuse an answer for
CACHE_SECONDS = 5
HOUR = 3600.0
CACHE_ROWS = 1_000_000  # [time_series] cache_rows: ~110 bytes a row


@define
class Window:
    """How far back (hours) and how many points per series at most."""

    lookback: float = field(default=4.0, metadata={"minimum": 0, "limit": "lookback_hours"})
    target_points: int = field(default=720, metadata={"minimum": 1, "limit": "target_points"})


class TimeSeriesApi:
    app = Klein()

    def __init__(
        self, db: Database, clock: IReactorTime, shared_seconds: float = SHARED_SECONDS, cache_rows: int = CACHE_ROWS
    ) -> None:
        """``cache_rows`` bounds the series kept in memory (0: every answer reads SQLite)."""
        self._db = db
        self._clock = clock
        self._answers = AnswerCache(clock, shared_seconds)
        self._series_json = SeriesCache(cache_rows).time_series_json if cache_rows > 0 else store.time_series_json

    async def _series(self, request: IRequest, source: str, experiment: str, unit: str | None, query: Window) -> Reply:
        cache_for(request, CACHE_SECONDS)
        key = ("series", source, experiment, unit, query.lookback, query.target_points)

        def compute() -> Any:
            now = self._clock.seconds()
            low, high = iso_utc(now - query.lookback * HOUR), iso_utc(now)
            return self._db.read(self._series_json, source, experiment, unit, low, high, query.target_points)

        return Reply(await self._answers.get(key, compute))

    async def _fallback(self, request: IRequest, source: str, column: str, experiment: str, unit: str | None, query: Window) -> Reply:
        cache_for(request, CACHE_SECONDS)
        key = ("fallback", source, column, experiment, unit, query.lookback, query.target_points)

        def compute() -> Any:
            low = iso_utc(self._clock.seconds() - query.lookback * HOUR)
            return self._db.read(store.fallback_json, source, column, experiment, unit, low, query.target_points)

        return Reply(await self._answers.get(key, compute))

    # One route per source, as the seed lists them; the per-unit ones do not check the unit (as the reference).

    @route(app, "/api/experiments/<experiment>/time_series/growth_rates", ["GET"], query=Window, returns=store.TimeSeries)
    async def growth_rates(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """Growth rates of every unit, one series per unit."""
        return await self._series(request, "growth_rates", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/temperature_readings", ["GET"], query=Window, returns=store.TimeSeries)
    async def temperature_readings(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """Temperatures of every unit, one series per unit."""
        return await self._series(request, "temperature_readings", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/od_readings", ["GET"], query=Window, returns=store.TimeSeries)
    async def od_readings(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """OD readings of every unit, one series per unit and channel (``unit-channel``)."""
        return await self._series(request, "od_readings", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/od_readings_filtered", ["GET"], query=Window, returns=store.TimeSeries)
    async def od_readings_filtered(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """Normalised OD of every unit, one series per unit."""
        return await self._series(request, "od_readings_filtered", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/od_readings_fused", ["GET"], query=Window, returns=store.TimeSeries)
    async def od_readings_fused(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """Fused OD of every unit, one series per unit."""
        return await self._series(request, "od_readings_fused", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/raw_od_readings", ["GET"], query=Window, returns=store.TimeSeries)
    async def raw_od_readings(self, request: IRequest, experiment: str, query: Window) -> Reply:
        """Raw OD readings of every unit, one series per unit and channel."""
        return await self._series(request, "raw_od_readings", experiment, None, query)

    @route(app, "/api/experiments/<experiment>/time_series/<data_source>/<column>", ["GET"], query=Window, returns=store.TimeSeries)
    async def fallback(self, request: IRequest, experiment: str, data_source: str, column: str, query: Window) -> Reply:
        """Any numeric column of a time-series table, every k-th row per unit."""
        return await self._fallback(request, data_source, column, experiment, None, query)

    @route(app, "/api/workers/<unit>/experiments/<experiment>/time_series/growth_rates", ["GET"], query=Window, returns=store.TimeSeries)
    async def unit_growth_rates(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's growth rates."""
        return await self._series(request, "growth_rates", experiment, unit, query)

    @route(
        app, "/api/workers/<unit>/experiments/<experiment>/time_series/temperature_readings", ["GET"], query=Window, returns=store.TimeSeries
    )
    async def unit_temperature_readings(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's temperatures."""
        return await self._series(request, "temperature_readings", experiment, unit, query)

    @route(app, "/api/workers/<unit>/experiments/<experiment>/time_series/od_readings", ["GET"], query=Window, returns=store.TimeSeries)
    async def unit_od_readings(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's OD readings, one series per channel."""
        return await self._series(request, "od_readings", experiment, unit, query)

    @route(
        app, "/api/workers/<unit>/experiments/<experiment>/time_series/od_readings_filtered", ["GET"], query=Window, returns=store.TimeSeries
    )
    async def unit_od_readings_filtered(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's normalised OD."""
        return await self._series(request, "od_readings_filtered", experiment, unit, query)

    @route(
        app, "/api/workers/<unit>/experiments/<experiment>/time_series/od_readings_fused", ["GET"], query=Window, returns=store.TimeSeries
    )
    async def unit_od_readings_fused(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's fused OD."""
        return await self._series(request, "od_readings_fused", experiment, unit, query)

    @route(
        app, "/api/workers/<unit>/experiments/<experiment>/time_series/raw_od_readings", ["GET"], query=Window, returns=store.TimeSeries
    )
    async def unit_raw_od_readings(self, request: IRequest, unit: str, experiment: str, query: Window) -> Reply:
        """One unit's raw OD readings, one series per channel."""
        return await self._series(request, "raw_od_readings", experiment, unit, query)

    @route(
        app,
        "/api/workers/<unit>/experiments/<experiment>/time_series/<data_source>/<column>",
        ["GET"],
        query=Window,
        returns=store.TimeSeries,
    )
    async def unit_fallback(self, request: IRequest, unit: str, experiment: str, data_source: str, column: str, query: Window) -> Reply:
        """Any numeric column of a time-series table for one unit, every k-th row."""
        return await self._fallback(request, data_source, column, experiment, unit, query)

    @route(app, "/api/experiments/<experiment>/media_rates", ["GET"], returns=dict[str, store.MediaRate])
    async def media_rates(self, request: IRequest, experiment: str) -> Any:
        """mL/h of media and alt media added per unit over the last 3 h, and their sum as ``all``."""
        cache_for(request, CACHE_SECONDS)
        since = iso_utc(self._clock.seconds() - store.MEDIA_WINDOW_HOURS * HOUR)
        return await self._db.read(store.media_rates, experiment, since)
