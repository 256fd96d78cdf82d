"""How a request reaches a handler and how its answer or error becomes JSON.

Each resource family is a class with its own ``Klein`` app whose routes carry
full paths (``/api/experiments/<experiment>``), so a route can be found with
grep. :class:`Router` merges the families' URL maps into one werkzeug map, so
a literal segment in one family (``/api/workers/assignments``) beats a
parameter in another (``/api/workers/<unit>``) and 404 and 405 are decided
over the whole tree, then hands the request to the family that owns the rule.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from attrs import define, field
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule
from zope.interface import implementer

from ..bodies import read_body
from ..errors import ApiError
from ..limits import Limits
from ..queries import check_query_class, read_query

log = Logger()


@define
class Reply:
    """A handler's answer when 200 and JSON are not the whole story (``bytes`` are sent as they are)."""

    body: Any
    code: int = 200
    content_type: bytes = b"application/json"
    headers: dict[bytes, bytes] = field(factory=dict)


def write_json(request: IRequest, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def write_error(request: IRequest, error: ApiError) -> bytes:
    for name, value in error.headers.items():
        request.setHeader(name, value)
    return write_json(request, error.body(), error.status)


def _render(request: IRequest, result: Any) -> Any:
    if IResource.providedBy(result):
        return result  # Klein renders it: a file served by twisted.web.static streams, whatever its size
    if not isinstance(result, Reply):
        return write_json(request, result)
    for name, value in result.headers.items():
        request.setHeader(name, value)
    if result.content_type == b"application/json" and not isinstance(result.body, bytes):
        return write_json(request, result.body, result.code)
    request.setResponseCode(result.code)
    request.setHeader(b"content-type", result.content_type)
    return result.body if isinstance(result.body, bytes) else str(result.body).encode("utf-8")


def _on_failure(request: IRequest, failure: Failure) -> bytes | None:
    if failure.check(ApiError):
        return write_error(request, failure.value)
    if failure.check(CancelledError):
        return None  # the client went away; nobody is left to answer
    log.failure("Unhandled error in {method} {path}", failure, method=request.method, path=request.path)
    return write_error(
        request,
        ApiError(
            500,
            "Internal error.",
            cause="The unit hit an unexpected error; the details are in its log.",
            remediation="Retry; if it persists, report it with the unit's log.",
        ),
    )


@define(frozen=True)
class RouteInfo:
    """What a route declares about itself, read by the request policy and the API document.

    ``query`` is an attrs class of the query parameters (see ``queries``);
    ``returns`` describes the success body for the API document: a type
    (an attrs class, a TypedDict, ``list[X]``, ``dict[str, X]``, ``X | None``,
    ``str``, ``Any``...) or a literal JSON Schema dict, answered with
    ``status``; a route with more than one success code maps each code to its
    type (``{201: Created, 200: Updated}``), ``status`` being one of them.
    ``public`` routes answer
    without credentials even when authentication is on; ``dangerous`` ones
    need credentials even when it is only on for them; ``expensive`` ones are
    rate limited per client; ``upload`` ones take the larger upload limit;
    ``by_capability`` ones are named by an unguessable id (a task's), so the
    cluster secret does not guard reads of them, and users can poll them.
    ``media`` lists the success responses' content types (a ``text/plain``
    one is a string) for the API document.
    """

    path: str
    methods: tuple[str, ...]
    body: type | None
    summary: str
    query: type | None = None
    returns: Any = None
    status: int = 200
    public: bool = False
    dangerous: bool = False
    expensive: bool = False
    upload: bool = False
    by_capability: bool = False
    media: tuple[str, ...] = ("application/json",)


def route(
    app: Klein,
    path: str | Sequence[str],
    methods: Sequence[str],
    *,
    body: type | None = None,
    query: type | None = None,
    returns: Any = None,
    status: int = 200,
    public: bool = False,
    dangerous: bool = False,
    expensive: bool = False,
    upload: bool = False,
    by_capability: bool = False,
    media: tuple[str, ...] = ("application/json",),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a JSON route: decode ``body`` and ``query`` strictly, render the result or the error as JSON.

    ``path`` may be several paths that the reference serves alike (``/api/units/...`` and
    ``/api/workers/...``): one handler, one entry per path in the route table.
    """

    if query is not None:
        check_query_class(query)
    paths = (path,) if isinstance(path, str) else tuple(path)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        infos = tuple(
            RouteInfo(
                one,
                tuple(methods),
                body,
                (f.__doc__ or "").strip(),
                query=query,
                returns=returns,
                status=status,
                public=public,
                dangerous=dangerous,
                expensive=expensive,
                upload=upload,
                by_capability=by_capability,
                media=media,
            )
            for one in paths
        )

        @functools.wraps(f)
        def handler(self: Any, request: IRequest, **kwargs: Any) -> Any:
            def call() -> Any:
                if body is not None:
                    kwargs["body"] = read_body(request, body)
                if query is not None:
                    kwargs["query"] = read_query(request, query)
                result = f(self, request, **kwargs)
                if inspect.iscoroutine(result):
                    return Deferred.fromCoroutine(result)
                return result

            try:
                result = call()
            except Exception:
                return _on_failure(request, Failure())
            if isinstance(result, Deferred):
                return result.addCallbacks(
                    lambda r: _render(request, r), lambda fail: _on_failure(request, fail)
                )
            return _render(request, result)

        handler.route_infos = infos  # type: ignore[attr-defined]
        for one in paths:
            app.route(one, methods=list(methods), strict_slashes=False)(handler)
        return handler

    return decorate


class RequestPolicy(Protocol):
    """Who may call a route: checked after the route is found and before its handler runs."""

    def admit(self, request: IRequest, info: RouteInfo) -> Deferred[None] | None:
        """Return None to admit at once, a Deferred to admit later, or raise ApiError to refuse."""


def _finish(request: IRequest, rendered: Any) -> None:
    """Complete a request whose rendering was deferred behind the policy, unless its client left."""
    if rendered is server.NOT_DONE_YET or rendered is None or request.finished or getattr(request, "_disconnected", False):
        return
    request.write(rendered)
    request.finish()


def route_table(families: Iterable[Any]) -> list[RouteInfo]:
    """Every route the families declare, sorted by path: what the router serves and the API document shows."""
    infos = []
    for family in families:
        for name in dir(type(family)):
            infos.extend(getattr(getattr(type(family), name), "route_infos", ()))
    return sorted(infos, key=lambda i: (i.path, i.methods))


@implementer(IResource)
class Router:
    """The site's root: dispatches every path to the resource family that owns it.

    ``fallbacks`` maps a path prefix to the error for unknown paths under it,
    so that ``/api/...`` on a worker can say where to go instead.
    """

    isLeaf = True

    def __init__(
        self,
        families: Iterable[Any],
        fallbacks: dict[str, ApiError] | None = None,
        policy: RequestPolicy | None = None,
    ) -> None:
        self._families = list(families)
        self._resources = [family.app.resource() for family in self._families]
        self._fallbacks = fallbacks or {}
        self._policy = policy
        self._infos: dict[tuple[int, str, str], RouteInfo] = {}
        rules = []
        for index, family in enumerate(self._families):
            for rule in family.app.url_map.iter_rules():
                key = (index, rule.endpoint, rule.rule)  # a handler may serve several paths
                rules.append(Rule(rule.rule, methods=rule.methods, endpoint=key, strict_slashes=False))
                for info in getattr(getattr(type(family), rule.endpoint, None), "route_infos", ()):
                    if info.path == rule.rule:
                        self._infos[key] = info
        self.url_map = Map(rules)

    def routes(self) -> list[RouteInfo]:
        """Every route of every family, for the route table and its tests."""
        return route_table(self._families)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("the router's children are its resource families")

    def render(self, request: IRequest) -> Any:
        path = "/" + "/".join(segment.decode("utf-8", "replace") for segment in request.postpath)
        adapter = self.url_map.bind("localhost", path_info=path, default_method=request.method.decode("ascii", "replace"))
        try:
            key, _ = adapter.match()
        except RequestRedirect:
            return self._not_found(request, path)
        except MethodNotAllowed as e:
            allowed = sorted(e.valid_methods or [])
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            return write_error(
                request,
                ApiError(
                    405,
                    "Method not allowed.",
                    cause=f"{request.method.decode('ascii', 'replace')} is not served on {path}.",
                    remediation="Use one of: " + ", ".join(allowed) + ".",
                ),
            )
        except NotFound:
            return self._not_found(request, path)
        resource = self._resources[key[0]]
        info = self._infos.get(key)
        if self._policy is None or info is None:
            return resource.render(request)
        try:
            admitted = self._policy.admit(request, info)
        except Exception:
            return _on_failure(request, Failure())
        if admitted is None:
            return resource.render(request)
        admitted.addCallback(lambda _: _finish(request, resource.render(request)))
        admitted.addErrback(lambda fail: _finish(request, _on_failure(request, fail)))
        return server.NOT_DONE_YET

    def _not_found(self, request: IRequest, path: str) -> bytes:
        for prefix, error in self._fallbacks.items():
            if path == prefix or path.startswith(prefix + "/"):
                return write_error(request, error)
        return write_error(
            request,
            ApiError(404, "Not found.", cause=f"No route matches {path}.", remediation="Check the path against the API document."),
        )


class BoundedRequest(server.Request):
    """A request that stops buffering its body past the site's limit and answers 413.

    The site's limit is the largest any route takes (an upload); the router
    then holds each route to its own, smaller limit.
    """

    def gotLength(self, length: int | None) -> None:
        self._body_limit: int = self.channel.site.limits.transport_bytes
        self._body_seen = 0
        self._too_large = length is not None and length > self._body_limit
        server.Request.gotLength(self, 0 if self._too_large else length)

    def handleContentChunk(self, data: bytes) -> None:
        self._body_seen += len(data)
        if self._body_seen > self._body_limit:
            self._too_large = True
        if not self._too_large:
            server.Request.handleContentChunk(self, data)

    def process(self) -> None:
        if getattr(self, "_too_large", False):
            self.site = self.channel.site
            body = write_error(self, body_too_large(self._body_limit, "upload_bytes"))
            self.setHeader(b"connection", b"close")
            self.write(body)
            self.finish()
            return
        server.Request.process(self)


def body_too_large(limit: int, key: str) -> ApiError:
    return ApiError(
        413,
        "Request body too large.",
        cause=f"The body is larger than this route's limit of {limit} bytes.",
        remediation=f"Send a smaller body, or raise [limits] {key} in the config.",
    )


class ApplianceSite(server.Site):
    requestFactory = BoundedRequest
    displayTracebacks = False

    def __init__(self, root: IResource, limits: Limits, **kwargs: Any) -> None:
        # Twisted does not parse form bodies (one it cannot parse gets a bare 400 and a closed
        # connection): the routes that take a form read it with bodies.read_form_file.
        super().__init__(root, parsePOSTFormSubmission=False, **kwargs)
        self.limits = limits


def make_site(root: IResource, limits: Limits) -> ApplianceSite:
    site = ApplianceSite(root, limits)
    site.noisy = False
    return site
