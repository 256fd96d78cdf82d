"""Settings as MQTT payloads: out as the reference's clients read them, in cast strictly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.jobs.payloads import BadPayload, decode, encode


class EncodeTests(SynchronousTestCase):
    def test_shapes(self) -> None:
        self.assertEqual(encode(None), b"")
        self.assertEqual(encode(True), b"True")
        self.assertEqual(encode(False), b"False")
        self.assertEqual(encode(500), b"500")
        self.assertEqual(encode(0.25), b"0.25")
        self.assertEqual(encode("thermostat"), b"thermostat")
        self.assertEqual(encode({"od": 0.1, "angle": "90"}), b'{"od":0.1,"angle":"90"}')
        self.assertEqual(encode([1, 2]), b"[1,2]")


class DecodeTests(SynchronousTestCase):
    def test_casts(self) -> None:
        self.assertEqual(decode(b"500", "integer"), 500)
        self.assertEqual(decode(b" 12.5 ", "float"), 12.5)
        self.assertEqual(decode(b"3", "float"), 3.0)
        self.assertEqual(decode(b"hello", "string"), "hello")
        self.assertEqual(decode(b'{"a": 1}', "json"), {"a": 1})
        for text in (b"true", b"1", b"y", b"On", b"YES", b"t"):
            self.assertIs(decode(text, "boolean"), True)
        for text in (b"false", b"0", b"n", b"off", b"No", b"f"):
            self.assertIs(decode(text, "boolean"), False)

    def test_refusals_say_why(self) -> None:
        for payload, datatype, words in [
            (b"5.5", "integer", "not an integer"),
            (b"fast", "float", "not a number"),
            (b"nan", "float", "not a finite number"),
            (b"maybe", "boolean", "not a boolean"),
            (b"{", "json", "not JSON"),
            (b"\xff", "string", "not UTF-8"),
        ]:
            with self.assertRaisesRegex(BadPayload, words):
                decode(payload, datatype)
        with self.assertRaisesRegex(ValueError, "unknown datatype"):
            decode(b"1", "decimal")

    @given(
        st.binary(max_size=64),
        st.sampled_from(["string", "float", "integer", "boolean", "json"]),
    )
    def test_any_payload_casts_or_is_refused(
        self, payload: bytes, datatype: str
    ) -> None:
        try:
            decode(payload, datatype)
        except BadPayload:
            pass

    @given(
        st.one_of(
            st.integers(), st.booleans(), st.text().filter(lambda t: t.strip() == t)
        )
    )
    def test_round_trip(self, value: object) -> None:
        datatype = {bool: "boolean", int: "integer", str: "string"}[type(value)]
        self.assertEqual(decode(encode(value), datatype), value)
