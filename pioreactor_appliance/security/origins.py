"""Is a state-changing request coming from a page on another site?

Browsers send ``Origin`` on cross-site POSTs (and ``Referer`` when they
don't); scripts and the leader's fan-out send neither, and are let through.
A request from the unit's own origin, the one its ``Host`` names, is the web
UI itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.web.iweb import IRequest

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise(origin: str) -> str | None:
    """``scheme://host:port`` with the port always written; None if it is not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def claimed_origin(request: IRequest) -> str | None:
    """The origin the browser says the request comes from, or None if it says nothing."""
    for name in (b"origin", b"referer"):
        value = request.getHeader(name)
        if value:
            return value.decode("latin-1")
    return None


def own_origin(request: IRequest) -> str | None:
    host = request.getHeader(b"host")
    if host is None:
        return None
    scheme = "https" if request.isSecure() else "http"
    return normalise(f"{scheme}://{host.decode('latin-1')}")


def is_cross_site(request: IRequest, trusted: frozenset[str]) -> str | None:
    """The foreign origin a request comes from, or None when it is same-site or not from a browser."""
    claimed = claimed_origin(request)
    if claimed is None:
        return None
    origin = normalise(claimed)
    if origin is not None and (origin == own_origin(request) or origin in trusted):
        return None
    return claimed[:200]
