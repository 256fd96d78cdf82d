"""Query parameters: typed strictly, bounded by [limits], named in every refusal."""

from __future__ import annotations

import attrs
from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.limits import Limits
from pioreactor_appliance.queries import check_query_class, read_query


@define
class SeriesQuery:
    lookback: float = field(default=4.0, metadata={"minimum": 0, "limit": "lookback_hours"})
    target_points: int = field(default=720, metadata={"minimum": 1, "limit": "target_points"})
    filter_mod_n: bool = False
    unit: str = "$broadcast"


@define
class Required:
    page: int = field(metadata={"minimum": 0})


class FakeSite:
    limits = attrs.evolve(Limits.defaults(), target_points=100)


def request(**args: list[bytes]) -> DummyRequest:
    r = DummyRequest([b""])
    r.args = {name.encode(): values for name, values in args.items()}
    r.site = FakeSite()
    return r


class DeclarationTests(SynchronousTestCase):
    def test_a_field_type_that_cannot_be_parsed_is_refused_at_declaration(self) -> None:
        @define
        class Loose:
            unit: str | None = None

        with self.assertRaisesRegex(TypeError, "Loose.unit: a query parameter is int, float, bool or str"):
            check_query_class(Loose)
        check_query_class(SeriesQuery)


class ReadQueryTests(SynchronousTestCase):
    def refused(self, cls: type, mention: str, **args: list[bytes]) -> None:
        with self.assertRaises(ApiError) as raised:
            read_query(request(**args), cls)
        self.assertEqual(raised.exception.status, 400)
        self.assertIn(mention, f"{raised.exception.error} {raised.exception.remediation}")

    def test_defaults_and_values(self) -> None:
        self.assertEqual(read_query(request(), SeriesQuery), SeriesQuery())
        parsed = read_query(request(lookback=[b"1.5"], target_points=[b"50"], filter_mod_n=[b"true"], unit=[b"pio1"], _=[b"123"]), SeriesQuery)
        self.assertEqual(parsed, SeriesQuery(1.5, 50, True, "pio1"))

    def test_wrong_types(self) -> None:
        self.refused(SeriesQuery, "target_points: '5.5' is not an integer", target_points=[b"5.5"])
        self.refused(SeriesQuery, "lookback: 'nan' is not a number", lookback=[b"nan"])
        self.refused(SeriesQuery, "lookback: 'inf'", lookback=[b"inf"])
        self.refused(SeriesQuery, "filter_mod_n: 'maybe' is not true or false", filter_mod_n=[b"maybe"])
        self.refused(SeriesQuery, "not UTF-8", unit=[b"\xff"])

    def test_bounds_come_from_the_site_limits(self) -> None:
        self.refused(SeriesQuery, "above this unit's limit of 100", target_points=[b"101"])
        self.refused(SeriesQuery, "[limits] target_points", target_points=[b"101"])
        self.refused(SeriesQuery, "below 1", target_points=[b"0"])
        self.refused(SeriesQuery, "above this unit's limit of 8760", lookback=[b"9000"])
        self.assertEqual(read_query(request(target_points=[b"100"]), SeriesQuery).target_points, 100)

    def test_repeated_and_missing(self) -> None:
        self.refused(SeriesQuery, "more than once", lookback=[b"1", b"2"])
        self.refused(Required, "page: it is missing", other=[b"1"])
        self.assertEqual(read_query(request(page=[b"3"]), Required), Required(3))

    def test_without_a_limits_site_the_shipped_limits_apply(self) -> None:
        bare = DummyRequest([b""])
        bare.args = {b"target_points": [b"10000"]}
        self.assertEqual(read_query(bare, SeriesQuery).target_points, 10000)
        bare.args = {b"target_points": [b"10001"]}
        with self.assertRaises(ApiError):
            read_query(bare, SeriesQuery)
