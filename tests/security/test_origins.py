"""Which requests come from another site's page."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pioreactor_appliance.security.origins import is_cross_site, normalise


def request(host: bytes | None, **headers: bytes) -> DummyRequest:
    r = DummyRequest([b""])
    r.isSecure = lambda: False  # type: ignore[method-assign]
    if host is not None:
        r.requestHeaders.setRawHeaders(b"host", [host])
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name.encode(), [value])
    return r


class NormaliseTests(SynchronousTestCase):
    def test_default_ports_are_written(self) -> None:
        self.assertEqual(normalise("http://Leader.local"), "http://leader.local:80")
        self.assertEqual(normalise("https://leader.local/"), "https://leader.local:443")
        self.assertEqual(normalise("http://[::1]:8080/page?x=1"), "http://[::1]:8080")

    def test_non_origins_are_none(self) -> None:
        for value in ["null", "file:///etc/passwd", "http://", "http://host:99999", "not a url"]:
            self.assertIsNone(normalise(value), value)


class CrossSiteTests(SynchronousTestCase):
    def test_no_origin_is_a_script(self) -> None:
        self.assertIsNone(is_cross_site(request(b"leader.local"), frozenset()))

    def test_same_origin_passes(self) -> None:
        self.assertIsNone(is_cross_site(request(b"leader.local", origin=b"http://leader.local"), frozenset()))
        self.assertIsNone(is_cross_site(request(b"10.0.0.2:8080", origin=b"http://10.0.0.2:8080"), frozenset()))

    def test_referer_is_used_without_origin(self) -> None:
        self.assertIsNone(is_cross_site(request(b"leader.local", referer=b"http://leader.local/pioreactors"), frozenset()))
        self.assertEqual(
            is_cross_site(request(b"leader.local", referer=b"http://evil.example/page"), frozenset()), "http://evil.example/page"
        )

    def test_other_origins_are_cross_site(self) -> None:
        for origin in [b"http://evil.example", b"http://leader.local:8080", b"https://leader.local", b"null"]:
            self.assertIsNotNone(is_cross_site(request(b"leader.local", origin=origin), frozenset()), origin)

    def test_trusted_origins_pass(self) -> None:
        trusted = frozenset({"http://dash.lab:3000"})
        self.assertIsNone(is_cross_site(request(b"leader.local", origin=b"http://dash.lab:3000"), trusted))

    def test_origin_without_host_is_cross_site(self) -> None:
        self.assertIsNotNone(is_cross_site(request(None, origin=b"http://leader.local"), frozenset()))
