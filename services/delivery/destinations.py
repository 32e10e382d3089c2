"""Which webhook destinations are allowed: refuses private, loopback and other internal addresses.

A webhook URL is user input that makes our servers send requests; without this check anyone with
an API key could reach internal services (SSRF). The check runs when a subscription is created
and again at delivery time on the addresses the name resolves to then (DNS can change).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from services.errors import DestinationRefused, DestinationUnresolved

Resolver = Callable[[str, int], Iterable[str]]


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise DestinationUnresolved(f"temporary failure resolving host {host!r}: {exc}") from exc
        raise DestinationRefused(f"cannot resolve host {host!r}: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


def parse_destination(url: str) -> tuple[str, int]:
    """Return (host, port) of an http(s) URL or raise DestinationRefused saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused(f"url scheme must be http or https, not {parts.scheme or 'missing'!r}")
    if not parts.hostname:
        raise DestinationRefused("url has no host")
    if parts.username or parts.password:
        raise DestinationRefused("url must not carry credentials; use the signing secret instead")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused(f"url port is invalid: {exc}") from exc
    return parts.hostname, port


def address_class(address: str) -> str:
    """`loopback`, `private` (any non-global range) or `public`."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if not ip.is_global or ip.is_multicast:
        return "private"
    return "public"


def check_destination(
    url: str,
    *,
    allow_private: bool,
    allow_loopback: bool,
    resolve: Resolver = system_resolver,
) -> list[str]:
    """Raise DestinationRefused unless every address `url` resolves to is allowed; return them."""
    host, port = parse_destination(url)
    addresses = list(resolve(host, port))
    if not addresses:
        raise DestinationRefused(f"host {host!r} resolves to no address")
    for address in addresses:
        kind = address_class(address)
        if kind == "loopback" and not allow_loopback:
            raise DestinationRefused(f"{host} resolves to loopback address {address}; loopback is not allowed")
        if kind == "private" and not allow_private:
            raise DestinationRefused(
                f"{host} resolves to private/internal address {address}; private destinations are not allowed"
            )
    return addresses
