"""Strict request bodies: JSON in, attrs classes out, or a 4xx that names the field.

cattrs on its own turns ``"1"`` into ``1`` and ``1`` into ``True``; a lab
script that sends the wrong type should hear about it instead, so the
primitive hooks here refuse anything that is not already the right JSON type.
"""

from __future__ import annotations

import json
import uuid
from email.message import Message
from email.parser import BytesParser
from typing import Any, TypeVar

import attrs
import cattrs
from attrs import frozen
from cattrs.cols import is_sequence, list_structure_factory
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from .errors import ApiError

T = TypeVar("T")

JSON_TYPES = (b"application/json",)


def _strict(kind: type, *, allow: tuple[type, ...] = ()) -> Any:
    accepted = (kind, *allow)
    name = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[kind]

    def structure(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return kind(value)

    return structure


def _describe(exc: BaseException, kind: Any) -> str:
    """cattrs' wording for missing and unknown keys, ours (the validator's) otherwise."""
    if isinstance(exc, (KeyError, cattrs.ForbiddenExtraKeysError)) or not str(exc):
        return cattrs.v.format_exception(exc, kind)
    return str(exc)


def _strict_list(kind: Any, converter: cattrs.Converter) -> Any:
    """A JSON array only: a string is a sequence too, and ``"ab"`` must not become ``["a", "b"]``."""
    items = list_structure_factory(kind, converter)

    def structure(value: Any, kind: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return items(value, kind)

    return structure


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook_factory(is_sequence, _strict_list)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(float, _strict(float, allow=(int,)))
    converter.register_structure_hook(bool, _strict(bool))
    return converter


converter = make_converter()


def media_type(request: IRequest) -> bytes:
    raw = request.getHeader(b"content-type") or b""
    return raw.split(b";", 1)[0].strip().lower()


def is_json(request: IRequest) -> bool:
    kind = media_type(request)
    return kind in JSON_TYPES or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def fields_hint(cls: type) -> str:
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    optional = [f.name for f in attrs.fields(cls) if f.default is not attrs.NOTHING]
    parts = []
    if required:
        parts.append("required: " + ", ".join(required))
    if optional:
        parts.append("optional: " + ", ".join(optional))
    return "Send a JSON object (" + "; ".join(parts or ["no fields"]) + ")."


def read_json(request: IRequest, remediation: str) -> Any:
    """The request's JSON document; 415 for another media type, 400 if it does not parse."""
    if not is_json(request):
        raise ApiError(
            415,
            "Unsupported content type.",
            cause=f"This route takes application/json, not {media_type(request).decode('latin-1') or 'no content type'}.",
            remediation="Send the body as JSON with the header Content-Type: application/json.",
        )
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        raise ApiError(400, "Invalid request body.", cause="The body is empty.", remediation=remediation)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, "Invalid request body.", cause=f"Malformed JSON: {e}", remediation=remediation)


def structure(document: Any, cls: type[T]) -> T:
    """Turn a decoded JSON document into ``cls``, or raise a 400 that names the field."""
    remediation = fields_hint(cls)
    if not isinstance(document, dict):
        raise ApiError(400, "Invalid request body.", cause="The body must be a JSON object.", remediation=remediation)
    try:
        return converter.structure(document, cls)
    except cattrs.BaseValidationError as e:
        problems = "; ".join(cattrs.transform_error(e, path="body", format_exception=_describe))
        raise ApiError(400, "Invalid request body.", cause=problems, remediation=remediation)
    except (ValueError, TypeError) as e:
        raise ApiError(400, "Invalid request body.", cause=str(e), remediation=remediation)


def read_body(request: IRequest, cls: type[T]) -> T:
    return structure(read_json(request, fields_hint(cls)), cls)


@frozen
class FormFile:
    """One part of a form: the file name its client gave (never trusted as a path) and its bytes."""

    filename: str | None
    content: bytes


def form_parts(content_type: bytes, body: bytes) -> dict[str, list[FormFile]]:
    """The named parts of a ``multipart/form-data`` body; ValueError says why it cannot be read.

    The site does not let Twisted parse forms (a body it cannot parse would
    get Twisted's bare 400 and a closed connection), so routes that take a
    form read it here, off the reactor thread, and answer a JSON 400.
    """
    header = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n"
    message = BytesParser().parsebytes(header + body)
    if not message.is_multipart() or message.defects:
        problems = ", ".join(type(d).__name__ for d in message.defects) or "no parts"
        raise ValueError(f"the multipart body cannot be read ({problems})")
    fields: dict[str, list[FormFile]] = {}
    part: Message
    for part in message.get_payload():  # type: ignore[assignment]
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and name:
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            fields.setdefault(name, []).append(FormFile(part.get_filename(), content))
    return fields


async def read_form_upload(request: IRequest, field: str, error: str, remediation: str) -> FormFile:
    """The one file sent as form field ``field``, with its name; 400 ``error`` with what is wrong otherwise."""
    if media_type(request) != b"multipart/form-data":
        raise ApiError(
            400,
            error,
            cause=f"The body is {media_type(request).decode('latin-1') or 'not typed'}, not multipart/form-data.",
            remediation=remediation,
        )
    content_type = request.getHeader(b"content-type") or b""
    body = request.content.read() if request.content is not None else b""
    try:
        fields = await deferToThread(form_parts, content_type, body)
    except ValueError as e:
        raise ApiError(400, error, cause=f"The form is malformed: {e}.", remediation=remediation) from None
    values = fields.get(field, [])
    if len(values) != 1:
        raise ApiError(
            400,
            error,
            cause=f"The form carries {len(values)} fields named {field!r}; exactly one is needed.",
            remediation=remediation,
        )
    return values[0]


async def read_form_file(request: IRequest, field: str, error: str, remediation: str) -> bytes:
    """The bytes of the one file sent as form field ``field`` (see ``read_form_upload``)."""
    return (await read_form_upload(request, field, error, remediation)).content


def form_file_body(field: str, filename: str, data: bytes) -> tuple[bytes, bytes]:
    """Blocking (it copies the whole file): ``data`` as the one file of a multipart/form-data body, and its content type.

    For the leader re-posting an upload to a unit, which reads it with ``read_form_upload``.
    """
    boundary = uuid.uuid4().hex.encode()
    while boundary in data:
        boundary = uuid.uuid4().hex.encode()
    head = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="' + field.encode() + b'"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: application/zip\r\n\r\n"
    )
    return head + data + b"\r\n--" + boundary + b"--\r\n", b"multipart/form-data; boundary=" + boundary
