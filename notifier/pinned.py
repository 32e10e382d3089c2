"""Webhook connections only to vetted addresses: the DNS answer that is checked is the one used.

`check_destination` runs before every attempt, but the HTTP client would resolve the host name
again when it opens a connection: a DNS server answering a public address to the check and
127.0.0.1 to the connect a moment later (DNS rebinding) would get past the check. This httpcore
network backend resolves and checks the host itself when a connection is opened and connects to
one of the addresses it checked, in the order the resolver gave them. Nothing else changes: TLS
verifies the certificate for the host name (httpcore takes the server name from the URL, not from
the address connected to), the Host header is the URL's, and pooled keep-alive connections stay
with the address they were opened to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

HostCheck = Callable[[str, int], list[str]]
"""(host, port) -> the addresses a connection may go to (`destinations.vetted_addresses` with the
notifier's settings); raises DestinationRefused / DestinationUnresolved."""


class VettedNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, check: HostCheck, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._check = check
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await asyncio.to_thread(self._check, host, port)  # the resolver blocks
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} resolves to no address")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def vetted_transport(check: HostCheck) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (no proxy from the environment) with its connections opened by
    `VettedNetworkBackend`. httpx has no public option for a network backend, so it is set on the
    transport's connection pool; tests/notifier/test_pinned.py fails if a new httpx stops using it."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError(f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: cannot pin connections")
    pool._network_backend = VettedNetworkBackend(check)
    return transport
