"""Per-route ``Cache-Control``: how long a browser may reuse an answer (the reference's values)."""

from __future__ import annotations

from twisted.web.iweb import IRequest


def cache_for(request: IRequest, seconds: int) -> None:
    request.setHeader(b"cache-control", f"public, max-age={seconds}".encode("ascii"))
