"""Arbitrary header and query bytes: the policy's parsers answer or refuse, never crash."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.queries import read_query
from pioreactor_appliance.security.hosts import HostCheck
from pioreactor_appliance.security.origins import is_cross_site

from ..test_queries import SeriesQuery

header_bytes = st.binary(max_size=200) | st.text(max_size=100).map(lambda t: t.encode("utf-8"))


def request_with(headers: dict[bytes, bytes]) -> Any:
    r = DummyRequest([b""])
    r.isSecure = lambda: False  # type: ignore[method-assign]
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name, [value])
    return r


class ParserProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(host=header_bytes)
    def test_host_check_answers_for_any_bytes(self, host: bytes) -> None:
        self.assertIsInstance(HostCheck.of(["pio1"], []).allows(host), bool)

    @settings(max_examples=300, deadline=None)
    @given(host=header_bytes, origin=header_bytes, referer=header_bytes)
    def test_origin_check_answers_for_any_bytes(self, host: bytes, origin: bytes, referer: bytes) -> None:
        result = is_cross_site(request_with({b"host": host, b"origin": origin, b"referer": referer}), frozenset())
        self.assertTrue(result is None or isinstance(result, str))

    @settings(max_examples=300, deadline=None)
    @given(args=st.dictionaries(st.sampled_from([b"lookback", b"target_points", b"filter_mod_n", b"unit", b"other"]), st.lists(header_bytes, max_size=3)))
    def test_query_parsing_answers_or_refuses_with_400(self, args: dict[bytes, list[bytes]]) -> None:
        r = DummyRequest([b""])
        r.args = args
        try:
            parsed = read_query(r, SeriesQuery)
        except ApiError as e:
            self.assertEqual(e.status, 400)
        else:
            self.assertIsInstance(parsed, SeriesQuery)
