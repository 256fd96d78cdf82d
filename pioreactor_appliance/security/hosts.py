"""The Host header check that stops DNS rebinding.

A page on ``evil.example`` can re-point its own name at a unit's LAN address;
the browser then sends the unit requests whose ``Host`` is ``evil.example``.
A unit therefore answers only to its own names. An IP address in ``Host``
cannot come from rebinding, so any address is accepted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from attrs import frozen


def host_name(header: str) -> str:
    """``Host`` without its port, lower-cased; ``[::1]:80`` gives ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@frozen
class HostCheck:
    names: frozenset[str]
    any_host: bool = False

    @classmethod
    def of(cls, own_names: Iterable[str], configured: Iterable[str]) -> HostCheck:
        configured = [name.strip().lower() for name in configured if name.strip()]
        names = {host_name(name) for name in own_names if name}
        names |= {name + ".local" for name in names if "." not in name and not is_ip_address(name)}
        names |= {"localhost"} | {host_name(name) for name in configured if name != "*"}
        return cls(frozenset(names), "*" in configured)

    def allows(self, header: bytes | None) -> bool:
        if header is None or self.any_host:
            return True  # HTTP/1.0 clients may omit Host; browsers never do
        try:
            name = host_name(header.decode("ascii"))
        except UnicodeDecodeError:
            return False
        return name.rstrip(".") in self.names or is_ip_address(name)
