"""The OpenAPI 3.1 document of a unit's routes, generated from their ``@route`` declarations.

The routes are the contract: a document written by hand would drift from
them, so each operation here comes from a ``RouteInfo`` (path, methods,
``body``, ``query``, ``returns``, ``status``) and each schema from the Python
type the route declares. Body schemas follow the strict converter in
``bodies``: required fields are those without a default, extra keys are
refused, and nothing is coerced.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import (
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import attrs

from . import __version__
from .limits import Limits
from .resources.routing import RouteInfo

OPENAPI_VERSION = "3.1.0"

_PRIMITIVES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

# werkzeug's <converter(args):name>, or just <name>
_PARAMETER = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTERS: dict[str, dict[str, Any]] = {
    "default": {"type": "string", "pattern": "^[^/]+$"},
    "string": {"type": "string", "pattern": "^[^/]+$"},
    "path": {"type": "string", "minLength": 1},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
}

_ERROR_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["cause", "status"],
    "properties": {"cause": {"type": "string"}, "remediation": {"type": "string"}, "status": {"type": "integer"}},
    "additionalProperties": False,
}

ERROR_SCHEMA: dict[str, Any] = {
    "description": "Every error: the unit seed's flat fields and the leader seed's error_info, both (errors.error_body).",
    "type": "object",
    "required": ["error", "cause", "status", "error_info"],
    "properties": {
        "error": {"type": "string"},
        "cause": {"type": "string"},
        "remediation": {"type": "string"},
        "status": {"type": "integer"},
        "error_info": _ERROR_INFO,
        "diagnostics": {
            "description": "A profile's validation problems (experiment profiles only).",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["severity", "code", "message", "path"],
                "properties": {
                    "severity": {"enum": ["error", "warning", "info"]},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "path": {"type": "string"},
                    "hint": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

# Answers any route may give: from the router (404, 405) and from the request policy (401, 403, 414, 429).
_ALWAYS = (401, 403, 404, 405, 414, 429)
_WHY: dict[int, str] = {
    400: "A path parameter, query parameter or the body is invalid; the cause names which.",
    401: "Credentials, or the cluster signature a unit asks of writes, are missing or wrong (docs/security.md).",
    403: "Refused as a cross-site write, or sent to a Host name this unit does not answer to.",
    404: "Nothing matches; the cause says what is missing.",
    405: "The method is not served on this path; the Allow header lists those that are.",
    413: "The body is larger than this route's limit.",
    414: "The query string is longer than this unit's limit.",
    415: "The body is not JSON.",
    429: "Too many requests from this client; wait and retry.",
}


def _component_name(code: int) -> str:
    return HTTPStatus(code).name.title().replace("_", "")


class Schemas:
    """JSON Schemas for Python types; classes become named components, each name owned by one class."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {"Error": ERROR_SCHEMA}
        self._owners: dict[str, Any] = {"Error": None}

    def of(self, kind: Any) -> dict[str, Any]:
        """The schema of ``kind``: a type the routes declare, or a JSON Schema dict taken as it is."""
        if isinstance(kind, dict):
            return kind
        if kind is Any:
            return {}
        if kind is None or kind is type(None):
            return {"type": "null"}
        if kind in _PRIMITIVES:
            return {"type": _PRIMITIVES[kind]}
        origin, args = get_origin(kind), get_args(kind)
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.of(arg) for arg in args]}
        if origin is Literal:
            return {"enum": list(args)}
        if origin in (NotRequired, Required):
            return self.of(args[0])
        if origin in (list, Sequence) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "items": self.of(args[0])}
        if origin in (dict, Mapping) and args[:1] == (str,):
            return {"type": "object", "additionalProperties": self.of(args[1])}
        if isinstance(kind, type) and attrs.has(kind):
            return self._ref(kind, self._attrs_schema)
        if is_typeddict(kind):
            return self._ref(kind, self._typeddict_schema)
        raise TypeError(f"no JSON Schema for {kind!r}: declare a supported type or a JSON Schema dict")

    def _ref(self, cls: type, build: Any) -> dict[str, Any]:
        name = cls.__name__
        if name in self._owners and self._owners[name] is not cls:
            raise TypeError(f"two types are named {name} ({self._owners[name]!r} and {cls!r}); rename one")
        if name not in self._owners:
            self._owners[name] = cls
            self.components[name] = {}  # taken before building, so a class may refer to itself
            self.components[name] = build(cls)
        return {"$ref": f"#/components/schemas/{name}"}

    def _attrs_schema(self, cls: type) -> dict[str, Any]:
        """What the strict converter accepts: fields without a default are required, no other keys."""
        properties = {}
        for field in attrs.fields(attrs.resolve_types(cls)):
            properties[field.name] = {**self.of(field.type), **field.metadata.get("json_schema", {})}
        schema = _object(properties, [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING])
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):  # attrs' generated docstring says nothing
            schema["description"] = cls.__doc__.strip()
        return schema

    def _typeddict_schema(self, cls: type) -> dict[str, Any]:
        """Every key is required unless the class is ``total=False`` or the key ``NotRequired``.

        Hints are read with their extras because, with postponed annotations,
        Python 3.11 does not see ``NotRequired`` when it computes the required keys.
        """
        hints = get_type_hints(cls, include_extras=True)
        optional = set(getattr(cls, "__optional_keys__", ())) | {k for k, t in hints.items() if get_origin(t) is NotRequired}
        schema = _object({k: self.of(t) for k, t in hints.items()}, [k for k in hints if k not in optional])
        if cls.__doc__:
            schema["description"] = cls.__doc__.strip()
        return schema


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def openapi_path(path: str) -> str:
    """``/api/workers/<unit>`` -> ``/api/workers/{unit}``."""
    return _PARAMETER.sub(lambda m: "{" + m.group("name") + "}", path)


def path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": m.group("name"), "in": "path", "required": True, "schema": dict(_CONVERTERS[m.group("converter") or "default"])}
        for m in _PARAMETER.finditer(path)
    ]


def query_parameters(cls: type, limits: Limits) -> list[dict[str, Any]]:
    """One parameter a field, bounded as ``queries.read_query`` bounds it on this unit."""
    parameters = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        schema: dict[str, Any] = {"type": _PRIMITIVES[field.type]}
        if "minimum" in field.metadata:
            schema["minimum"] = field.metadata["minimum"]
        if "limit" in field.metadata:
            schema["maximum"] = getattr(limits, field.metadata["limit"])
        parameters.append({"name": field.name, "in": "query", "required": field.default is attrs.NOTHING, "schema": schema})
    return parameters


def successes(info: RouteInfo) -> dict[int, Any]:
    """Success code -> declared type: ``returns`` itself when it maps codes, else ``{status: returns}``."""
    if isinstance(info.returns, Mapping) and info.returns and all(isinstance(code, int) for code in info.returns):
        return dict(info.returns)
    return {info.status: info.returns}


def _media_schema(media: str, kind: Any, schemas: Schemas) -> dict[str, Any]:
    """A JSON body has the declared type's schema; text is a string, anything else (a zip) bytes."""
    if media == "application/json":
        return {"schema": schemas.of(kind)}
    if media.startswith("text/"):
        return {"schema": {"type": "string"}}
    return {"schema": {"type": "string", "format": "binary"}}


def _operation(info: RouteInfo, schemas: Schemas, limits: Limits) -> dict[str, Any]:
    summary, _, description = info.summary.partition("\n")
    operation: dict[str, Any] = {"summary": summary.strip()}
    if description.strip():
        operation["description"] = " ".join(description.split())
    parameters = path_parameters(info.path)
    if info.query is not None:
        parameters += query_parameters(info.query, limits)
    if parameters:
        operation["parameters"] = parameters
    errors = list(_ALWAYS)
    if parameters or info.body is not None:
        errors.append(400)
    if info.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.of(info.body)}}}
        errors += [413, 415]
    responses: dict[str, Any] = {
        str(code): {"description": HTTPStatus(code).phrase, "content": {media: _media_schema(media, kind, schemas) for media in info.media}}
        for code, kind in sorted(successes(info).items())
    }
    for code in sorted(errors):
        responses[str(code)] = {"$ref": f"#/components/responses/{_component_name(code)}"}
    responses["default"] = {"$ref": "#/components/responses/Error"}
    operation["responses"] = responses
    return operation


def under(prefix: str | tuple[str, ...], routes: Iterable[RouteInfo]) -> list[RouteInfo]:
    """The routes whose path is ``prefix`` (or one of the prefixes) or below it."""
    prefixes = (prefix,) if isinstance(prefix, str) else prefix
    return [info for info in routes if any(info.path == p or info.path.startswith(p + "/") for p in prefixes)]


def document(routes: Iterable[RouteInfo], prefix: str | tuple[str, ...], limits: Limits, title: str) -> dict[str, Any]:
    """The OpenAPI document of the routes under ``prefix``, with query bounds from ``limits``."""
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for info in under(prefix, routes):
        operation = _operation(info, schemas, limits)
        for method in info.methods:
            paths.setdefault(openapi_path(info.path), {})[method.lower()] = operation
    responses = {_component_name(code): _error_response(why) for code, why in sorted(_WHY.items())}
    responses["Error"] = _error_response("Any other error, e.g. 409 on a conflict, 500, or 503 when the database is unavailable.")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.components.items())), "responses": responses},
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
