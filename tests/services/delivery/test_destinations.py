"""The SSRF guard: which webhook destinations may be reached, judged on the resolved addresses.

No name resolution leaves this machine: every test injects its resolver or uses IP literals."""

from __future__ import annotations

import pytest

from services.delivery.destinations import address_class, check_destination, parse_destination
from services.errors import DestinationRefused, DestinationUnresolved


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "loopback"), ("0.1.2.3", "loopback"), ("::", "loopback"),  # reach the host's own services
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT)
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 well-known prefix
    ("64:ff9b:1:7f00:0:1::", "loopback"),  # NAT64 local-use /48 (RFC 6052 layout)
    ("2002:7f00:1::", "loopback"),  # 6to4
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1 (obfuscated)
    ("10.0.0.1", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"), ("169.254.169.254", "private"),
    ("100.64.0.1", "private"), ("fc00::1", "private"), ("fe80::1", "private"), ("224.0.0.1", "private"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"), ("2002:c0a8:101::", "private"),
    ("::ffff:169.254.169.254", "private"),
    ("8.8.8.8", "public"), ("2606:4700::1111", "public"), ("64:ff9b::808:808", "public"), ("2002:808:808::", "public"),
])
def test_address_classes(address: str, kind: str) -> None:
    assert address_class(address) == kind


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://[::1/", "not valid"),
    ("http://" + "a" * 300 + ".example/", "not a valid host name"),
    ("http://" + "a" * 64 + ".example/", "not a valid host name"),
    ("http://" + ".".join(["abcdefgh"] * 30) + "/", "longer than 253"),
    ("http://127.0.0.1:9/\x00", "control or whitespace"),
    ("http://127.0.0.1:9/a b", "control or whitespace"),
    ("http://127.0.0.1:9/\u2028", "control or whitespace"),
    ("http://exa mple.com/", "control or whitespace"),
    ("http://user:pw@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("ftp://example.com/", "scheme"), ("javascript:alert(1)", "scheme"), ("//example.com/x", "scheme"),
    ("http:///path", "no host"), ("http://example.com:99999/", "not valid"), ("http://example.com:x/", "not valid"),
    ("http://-bad.example/", "not a valid label"), ("http://bad_.example/", "not a valid label"),
    ("https://example.com/" + "p" * 2100, "longer than 2048"),
    ("https://hooks.slack.com/services/…/…/…abcd", "masked"),
])
def test_urls_the_client_cannot_send_as_written_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(DestinationRefused, match=fragment):
        parse_destination(url)


@pytest.mark.parametrize(("url", "host", "port"), [
    ("https://hooks.example.com/x?y=1", "hooks.example.com", 443),
    ("http://[2606:4700::1111]:8080/", "2606:4700::1111", 8080),
    ("https://例え.jp/hook", "例え.jp", 443), ("http://example.com./", "example.com.", 80),
])
def test_valid_urls_parse(url: str, host: str, port: int) -> None:
    assert parse_destination(url) == (host, port)


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "::", "0.0.0.0", "2002:7f00:1::"])
def test_embedded_loopback_is_refused_even_with_private_destinations_allowed(address: str) -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        check_destination("http://h.example/", allow_private=True, allow_loopback=False,
                          resolve=lambda host, port: [address])


def test_one_bad_address_among_many_refuses() -> None:
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.5"):
        check_destination("http://h.example/", allow_private=False, allow_loopback=False,
                          resolve=lambda host, port: ["8.8.8.8", "10.0.0.5"])


def test_a_temporary_dns_failure_is_retriable() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise DestinationUnresolved("temporary failure")

    with pytest.raises(DestinationUnresolved) as caught:
        check_destination("http://h.example/", allow_private=False, allow_loopback=False, resolve=failing)
    assert caught.value.retriable
