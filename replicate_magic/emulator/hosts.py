"""Which ``Host`` headers the emulator answers (pure: strings in, a verdict out).

The emulator listens on the user's machine, so any web page the user opens can
reach it. Cross-origin rules stop such a page from reading the answers, unless
it uses DNS rebinding: its own name (``evil.example``) made to resolve to
127.0.0.1, so the browser believes it talks to the page's origin. The browser
still sends ``Host: evil.example:PORT``, so answering only requests whose Host
names this server's own address and port defeats it. An IP literal can never
be a rebinding name (the page's origin would then be that address itself).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["WILDCARD_HOSTS", "parse_host", "host_allowed", "expected_host"]

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORT = 80  # a Host without a port means the scheme's default (RFC 9110, 7.2)
_HOST_RE = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:]+))(?::(?P<port>[0-9]{1,5}))?")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers this way
    return address


def parse_host(header: str) -> tuple[str, int] | None:
    """``(name, port)`` of a Host header (name lowercased, IPv6 without brackets), or None."""
    match = _HOST_RE.fullmatch(header.strip())
    if match is None:
        return None
    if match["ipv6"] is not None and not isinstance(_ip(match["ipv6"]), ipaddress.IPv6Address):
        return None  # brackets hold IPv6 literals only
    port = int(match["port"]) if match["port"] is not None else _DEFAULT_PORT
    if not 0 < port <= 65535:
        return None
    return (match["ipv6"] or match["name"]).lower(), port


def host_allowed(header: str | None, local: tuple[str, int], bind_host: str) -> bool:
    """True when `header` names the server the request reached.

    `local` is the (address, port) the connection arrived on; `bind_host` is what the
    server was told to listen on (an address, a name such as ``localhost``, or a wildcard).
    Accepted: that port, with the local address, ``localhost`` on a loopback address, the
    configured name, and, on a wildcard bind (reachable through any interface, e.g. from a
    container's port mapping), ``localhost`` or any IP literal.
    """
    parsed = parse_host(header) if header is not None else None
    if parsed is None or parsed[1] != local[1]:
        return False
    name = parsed[0]
    wildcard = bind_host in WILDCARD_HOSTS
    requested, local_ip = _ip(name), _ip(local[0])
    if requested is not None:
        return wildcard or requested == local_ip
    if name == "localhost":
        return wildcard or (local_ip is not None and local_ip.is_loopback)
    return _ip(bind_host) is None and name == bind_host.lower()


def expected_host(local: tuple[str, int]) -> str:
    """The Host header a client reaching `local` should send (for error messages)."""
    address = _ip(local[0])
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address or local[0])
    return f"{shown}:{local[1]}"
