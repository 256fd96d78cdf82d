"""Request and response shapes that more than one resource family uses."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from attrs import define, field


@define
class CommandBody:
    """The reference's body for its CLI-backed actions (plugins, update): ``pio <action> args --options``.

    Each route says which parts it takes and refuses the rest.
    """

    args: list[str] = field(factory=list)
    options: dict[str, Any] = field(factory=dict)
    env: dict[str, str] = field(factory=dict)


class Success(TypedDict):
    """The reference's acknowledgement of a change that has nothing else to say."""

    status: Literal["success"]
