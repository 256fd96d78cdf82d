"""Schemathesis against the served API documents, over real sockets, on every route.

It sends random and malformed paths, queries and bodies, and fails on any
5xx, a request that takes longer than ``REQUEST_TIMEOUT`` (a hang), a body
that shows a traceback (``tests/fuzz_hooks.py``), and any answer the document
does not describe (status code, content type, body schema).

Defaults keep CI short and repeatable; ``PIOREACTOR_FUZZ_EXAMPLES`` (examples
per operation) and ``PIOREACTOR_FUZZ_SEED`` make a longer or different run:
``PIOREACTOR_FUZZ_EXAMPLES=500 scripts/test tests.test_fuzz`` (or ``scripts/fuzz``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from klein import Klein
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.resources.api_documents import UnitApiDocument
from pioreactor_appliance.resources.routing import Router, make_site, route

from .cluster import UNLIMITED, ClusterTestCase

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("PIOREACTOR_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("PIOREACTOR_FUZZ_SEED", "20261101")
REQUEST_TIMEOUT = 5.0
# Fuzz the expensive routes' handlers, not their rate limit (tests/security covers that).
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,no_traceback"


class FuzzTests(ClusterTestCase):
    timeout = 60 + EXAMPLES * 12  # a slow run is not a hang: each request has its own timeout

    async def fuzz(self, unit: str, document: str) -> None:
        """Run schemathesis on ``document`` of ``unit``; fail with its output unless it passes."""
        code, output = await run_schemathesis(self.url(unit, document), Path(self.mktemp()))
        if code != 0:
            self.fail(f"schemathesis exited with {code} on {document} of {unit}:\n{output}")

    async def test_leader_api(self) -> None:
        await self.start_cluster(["pio1"], config=UNLIMITED)
        await self.fuzz("leader", "/api/openapi.json")

    async def test_unit_api(self) -> None:
        await self.start_cluster(["pio1"], config=UNLIMITED)
        await self.fuzz("pio1", "/unit_api/openapi.json")
        await self.fuzz("leader", "/unit_api/openapi.json")


class Leaky:
    """A family with the bug the fuzzer is for: a cause that quotes a traceback."""

    app = Klein()

    @route(app, "/unit_api/leaky/<name>", ["GET"], returns=dict[str, str])
    def leaky(self, request: IRequest, name: str) -> dict[str, str]:
        """Answers 400 with a traceback in its cause."""
        raise ApiError(400, "Bad name.", cause='Traceback (most recent call last):\n  File "x.py", line 1')


class FuzzerSelfTests(TestCase):
    timeout = 120

    async def test_a_traceback_in_a_body_fails_the_run(self) -> None:
        families: list[object] = [Leaky()]
        families.append(UnitApiDocument(families))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(make_site(Router(families), Limits.defaults()))
        self.addCleanup(port.stopListening)
        code, output = await run_schemathesis(f"http://127.0.0.1:{port.getHost().port}/unit_api/openapi.json", Path(self.mktemp()))
        self.assertNotEqual(code, 0, output)
        self.assertIn("shows a Python traceback", output)


async def run_schemathesis(url: str, workdir: Path) -> tuple[int, str]:
    """Schemathesis on the document at ``url``, in a child process (the reactor keeps serving): exit code and output."""
    workdir = workdir.absolute()
    workdir.mkdir(parents=True)
    args = [
        "run", url,
        "--checks", CHECKS,
        "--max-examples", str(EXAMPLES),
        "--seed", SEED,
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--generation-database", "none",
        "--workers", "1",  # hypothesis caches are not thread-safe: 2 workers failed runs inside schemathesis
        "--no-color",
    ]  # fmt: skip
    env = {  # no proxies and no user config: it only talks to the loopback unit
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
    }
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))
    out, err, code = await getProcessOutputAndValue(schemathesis, args, env=env, path=str(workdir), reactor=reactor)
    return code, out.decode(errors="replace") + err.decode(errors="replace")
