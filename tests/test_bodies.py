from __future__ import annotations

from io import BytesIO

from attrs import define, field, validators
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pioreactor_appliance.bodies import FormFile, form_parts, read_body
from pioreactor_appliance.errors import ApiError


@define
class Example:
    name: str = field(validator=validators.min_len(1))
    count: int
    ratio: float = 1.0
    flag: bool = False
    tags: list[str] = field(factory=list)


def request(body: bytes, content_type: bytes | None = b"application/json") -> DummyRequest:
    r = DummyRequest([b""])
    r.content = BytesIO(body)
    if content_type is not None:
        r.requestHeaders.setRawHeaders(b"content-type", [content_type])
    return r


class ReadBodyTests(SynchronousTestCase):
    def error(self, body: bytes, content_type: bytes | None = b"application/json") -> ApiError:
        with self.assertRaises(ApiError) as caught:
            read_body(request(body, content_type), Example)
        return caught.exception

    def test_valid(self) -> None:
        got = read_body(request(b'{"name":"a","count":2,"ratio":3,"tags":["x"]}', b"application/json; charset=utf-8"), Example)
        self.assertEqual(got, Example("a", 2, 3.0, False, ["x"]))

    def test_wrong_types_are_not_coerced(self) -> None:
        for body, where in [
            (b'{"name":"a","count":"2"}', "body.count"),
            (b'{"name":"a","count":true}', "body.count"),
            (b'{"name":"a","count":2,"flag":1}', "body.flag"),
            (b'{"name":3,"count":2}', "body.name"),
            (b'{"name":"a","count":2,"tags":[1]}', "body.tags[0]"),
            (b'{"name":"a","count":2,"tags":"ab"}', "expected a list, got str @ body.tags"),
            (b'{"name":"a","count":2,"tags":{"a":1}}', "expected a list, got dict @ body.tags"),
        ]:
            e = self.error(body)
            self.assertEqual(e.status, 400)
            self.assertIn(where, e.cause)

    def test_missing_and_unknown_fields_are_named(self) -> None:
        e = self.error(b'{"count":2,"colour":"red"}')
        self.assertIn("required field missing @ body.name", e.cause)
        self.assertIn("colour", e.cause)
        self.assertIn("required: name, count", e.remediation)

    def test_validator_message_is_the_cause(self) -> None:
        e = self.error(b'{"name":"","count":2}')
        self.assertIn("Length of 'name' must be >= 1", e.cause)

    def test_malformed_empty_and_non_object(self) -> None:
        self.assertIn("Malformed JSON", self.error(b'{"name":').cause)
        self.assertIn("empty", self.error(b"").cause)
        self.assertIn("JSON object", self.error(b"[1,2]").cause)
        self.assertIn("Malformed JSON", self.error(b"\xff\xfe").cause)

    def test_wrong_content_type_is_415(self) -> None:
        for content_type in (b"text/plain", b"application/x-www-form-urlencoded", None):
            e = self.error(b'{"name":"a","count":2}', content_type)
            self.assertEqual(e.status, 415)
            self.assertIn("application/json", e.remediation)


class FormFieldsTests(SynchronousTestCase):
    TYPE = b"multipart/form-data; boundary=XyZ"

    def test_named_parts_in_order(self) -> None:
        body = (
            b"--XyZ\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a.zip\"\r\n"
            b"Content-Type: application/zip\r\n\r\nPK\x03\x04\r\n--XyZ\r\n"
            b"Content-Disposition: form-data; name=\"archive\"\r\n\r\nsecond\r\n--XyZ--\r\n"
        )
        self.assertEqual(form_parts(self.TYPE, body), {"archive": [FormFile("a.zip", b"PK\x03\x04"), FormFile(None, b"second")]})

    def test_unreadable_forms_name_the_problem(self) -> None:
        for content_type, body in [
            (b"multipart/form-data", b"no boundary at all"),
            (self.TYPE, b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nnever closed"),
            (self.TYPE, b"nothing but a preamble"),
        ]:
            with self.assertRaises(ValueError) as caught:
                form_parts(content_type, body)
            self.assertIn("cannot be read", str(caught.exception))
