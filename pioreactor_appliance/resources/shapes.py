"""Response shapes that more than one resource family answers with."""

from __future__ import annotations

from typing import Literal, TypedDict


class Success(TypedDict):
    """The reference's acknowledgement of a change that has nothing else to say."""

    status: Literal["success"]
