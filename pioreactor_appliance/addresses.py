"""Where a unit's HTTP server is, from the host (or host:port) that config names; no Twisted, for first boot too."""

from __future__ import annotations


def http_base(host: str, default_port: int) -> str:
    """``http://host:port`` for ``host`` (``host:port`` and ``[v6]:port`` keep their own port)."""
    has_port = host.rsplit("]", 1)[-1].count(":") == 1
    return f"http://{host}" if has_port else f"http://{host}:{default_port}"
