"""Schemathesis hooks for ``tests.test_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``).

A 500 already fails ``not_a_server_error``; a traceback can also leak in a
4xx or a 200 (an exception's text quoted into a cause), which nothing else
would notice.
"""

from __future__ import annotations

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
