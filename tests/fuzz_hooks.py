"""Schemathesis hooks for ``tests.test_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``).

A 500 already fails ``not_a_server_error``; a traceback can also leak in a
4xx or a 200 (an exception's text quoted into a cause), which nothing else
would notice.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import schemathesis

TRACEBACK = re.compile(rb'Traceback \(most recent call last\)|File "[^"\n]*", line \d+')


@schemathesis.check
def no_traceback(ctx: Any, response: Any, case: Any) -> None:
    """Fail when a response body shows a Python traceback."""
    found = TRACEBACK.search(response.content or b"")
    if found:
        raise AssertionError(f"The response body shows a Python traceback: {found.group().decode(errors='replace')!r}")


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Worker setup connects to the ``ipv4_address`` it is given: keep a generated valid one on loopback,
    so fuzzing never sends a packet off this machine (invalid ones are kept: they must be a 400)."""
    if context.operation is None or context.operation.path != "/api/workers/setup" or not isinstance(body, dict):
        return body
    address = body.get("ipv4_address")
    if isinstance(address, str):
        try:
            if not ipaddress.IPv4Address(address).is_loopback:
                body = {**body, "ipv4_address": "127.0.0.1"}
        except ValueError:
            pass
    return body
