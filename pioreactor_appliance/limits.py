"""The bounds every request meets, read from ``[limits]`` in the config."""

from __future__ import annotations

import attrs
from attrs import frozen

from .config import Config

SECTION = "limits"


@frozen
class Limits:
    """One number per limit; the shipped defaults live in ``default_config.ini``."""

    json_body_bytes: int
    upload_bytes: int
    query_string_bytes: int
    query_params: int
    zip_entries: int
    zip_uncompressed_bytes: int
    zip_ratio: int
    lookback_hours: int
    target_points: int
    page_size: int
    expensive_per_minute: int
    expensive_burst: int
    auth_failures_per_minute: int

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(**{f.name: config.get_int(SECTION, f.name) for f in attrs.fields(cls)})

    @classmethod
    def defaults(cls) -> Limits:
        return cls.from_config(Config.defaults())

    @property
    def transport_bytes(self) -> int:
        """The most any request may send: no route takes more than this."""
        return max(self.json_body_bytes, self.upload_bytes)
