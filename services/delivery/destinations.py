"""Which webhook destinations are allowed: refuses private, loopback and other internal addresses.

A webhook URL is user input that makes our servers send requests; without this check anyone with
an API key could reach internal services (SSRF). The check runs when a subscription is created,
again before every attempt on the addresses the name resolves to then (DNS can change), and when
the notifier opens a connection, which goes to one of the addresses checked at that moment
(notifier/pinned.py: no second DNS answer to rebind to).

- The URL itself must be one the HTTP client sends as written: http or https, a host name of
  valid labels (each at most 63 characters, 253 in all, after IDNA encoding) or an IP literal, no
  credentials, no control characters or whitespace anywhere, at most 2,048 characters.
- Addresses are judged after unwrapping every IPv6 form that carries an IPv4 address
  (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4
  2002::/16, Teredo 2001::/32): the embedded IPv4 address decides. 0.0.0.0/8 and :: reach the
  host's own services, so they count as loopback.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from services.errors import DestinationRefused, DestinationUnresolved

Resolver = Callable[[str, int], Iterable[str]]

MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\ufeff]")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            raise DestinationUnresolved(f"temporary failure resolving host {host!r}: {exc}") from exc
        raise DestinationRefused(f"cannot resolve host {host!r}: {exc}") from exc
    except (UnicodeError, ValueError) as exc:
        raise DestinationRefused(f"host {host!r} is not a valid host name: {exc}") from exc
    except OSError as exc:  # the resolver itself failed (no network, no resolv.conf): try again later
        raise DestinationUnresolved(f"cannot resolve host {host!r} just now: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


def parse_destination(url: str) -> tuple[str, int]:
    """Return (host, port) of an http(s) URL or raise DestinationRefused saying why."""
    if not isinstance(url, str) or not url:
        raise DestinationRefused("url is empty")
    if len(url) > MAX_URL_CHARS:
        raise DestinationRefused(f"url is longer than {MAX_URL_CHARS} characters")
    if "…" in url:
        raise DestinationRefused("url contains '…': it looks like a masked URL as reads show it; send the real one")
    if bad := _FORBIDDEN.search(url):
        raise DestinationRefused(f"url contains a control or whitespace character ({bad.group()!r} at "
                                 f"position {bad.start()}); percent-encode it")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # e.g. http://[::1/ or a port that is not a number
        raise DestinationRefused(f"url is not valid: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused(f"url scheme must be http or https, not {parts.scheme or 'missing'!r}")
    if not parts.hostname:
        raise DestinationRefused("url has no host")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("url must not carry credentials; use the signing secret instead")
    host = check_host(parts.hostname)
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise DestinationRefused(f"url is not one the HTTP client can send: {exc}") from exc
    return host, port or (443 if parts.scheme == "https" else 80)


def check_host(host: str) -> str:
    """`host` (an IP literal, or a host name checked label by label after IDNA encoding)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise DestinationRefused(f"host {host[:80]!r} is not a valid host name: {exc}") from exc
    if len(ascii_host) > MAX_HOST_CHARS:
        raise DestinationRefused(f"host name is longer than {MAX_HOST_CHARS} characters")
    for label in ascii_host.split("."):
        if not _LABEL.match(label):
            what = "longer than 63 characters" if len(label) > MAX_LABEL_CHARS else "not a valid label"
            raise DestinationRefused(f"host name label {label[:70]!r} is {what}")
    return host


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and reaches them through), if any."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    packed = ip.packed
    if ip in _NAT64 or ip in _IPV4_TRANSLATED:
        return [ipaddress.IPv4Address(packed[12:])]
    if ip in _NAT64_LOCAL:  # RFC 6052 /48: 16 bits of IPv4, the u octet, 16 bits more
        return [ipaddress.IPv4Address(packed[6:8] + packed[9:11])]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # ::a.b.c.d (deprecated); :: and ::1 are not IPv4
        return [ipaddress.IPv4Address(packed[12:])]
    return []


def address_class(address: str) -> str:
    """`loopback`, `private` (any non-global range) or `public`; embedded IPv4 addresses decide."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_unspecified:
            return "loopback"
        inner = embedded_ipv4(ip)
        if inner:
            classes = {address_class(str(v4)) for v4 in inner}
            return "loopback" if "loopback" in classes else "private" if "private" in classes else "public"
    elif ip in _THIS_NETWORK:
        return "loopback"
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
    return vetted_addresses(host, port, allow_private=allow_private, allow_loopback=allow_loopback, resolve=resolve)


def vetted_addresses(
    host: str,
    port: int,
    *,
    allow_private: bool,
    allow_loopback: bool,
    resolve: Resolver = system_resolver,
) -> list[str]:
    """The addresses `host` resolves to, when every one is allowed; else DestinationRefused
    (DestinationUnresolved while DNS fails). What the notifier's connections are opened to
    (notifier/pinned.py), so the answer checked is the answer used."""
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
