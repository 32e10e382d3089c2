"""Webhook connections go only to the addresses the destination check allowed (notifier/pinned.py).

A real HTTP receiver on loopback and the notifier's own client (`make_http_client`); the resolver
is scripted, as a DNS server under an attacker's control would answer. `localhost` is the host name
because the system resolver also maps it to 127.0.0.1: a client that resolved again by itself
would reach the receiver.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from notifier.app import make_http_client
from notifier.delivery import Outcome, SenderConfig, WebhookSender
from services.errors import DestinationUnresolved
from services.metrics import NotifierMetrics
from services.settings import NotifierSettings
from tests.notifier.helpers import make_action, make_subscription
from tests.notifier.receivers import serving_on_loopback

PUBLIC = "93.184.216.34"


class Receiver:
    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[tuple[Receiver, int]]:
    receiver = Receiver()
    async with serving_on_loopback(receiver.handle) as url:
        yield receiver, urlsplit(url).port or 0


class Scripted:
    """Answers the n-th lookup with answers[n] (the last one from then on); an exception is raised."""

    def __init__(self, *answers: list[str] | Exception) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        answer = self.answers[min(len(self.lookups), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def settings(*, allow_loopback: bool) -> NotifierSettings:
    return NotifierSettings(allow_loopback_destinations=allow_loopback)


async def attempt(url: str, resolve: Scripted, *, allow_loopback: bool) -> Outcome:
    config = SenderConfig(timeout_s=5.0, allow_private=False, allow_loopback=allow_loopback)
    async with make_http_client(settings(allow_loopback=allow_loopback), resolve) as client:
        sender = WebhookSender(client, config, NotifierMetrics(CollectorRegistry()), resolve=resolve)
        return (await sender.attempt(make_subscription(url=url), make_action())).outcome


async def test_a_rebinding_answer_at_connect_time_is_refused() -> None:
    """The check before the attempt is told a public address; the lookup when the connection is
    opened says 127.0.0.1: nothing reaches the loopback service."""
    async with receiving() as (receiver, port):
        resolve = Scripted([PUBLIC], ["127.0.0.1"])
        outcome = await attempt(f"http://localhost:{port}/hook", resolve, allow_loopback=False)
    assert outcome is Outcome.REFUSED
    assert receiver.hosts == []
    assert resolve.lookups == ["localhost", "localhost"]  # the check, then the connect


async def test_the_connection_goes_to_the_address_checked_with_the_host_name_kept() -> None:
    """A name only the scripted resolver knows is reached at the address it gave; the request still
    names the host (Host header), as TLS would (server name from the URL)."""
    async with receiving() as (receiver, port):
        resolve = Scripted(["127.0.0.1"])
        outcome = await attempt(f"http://hooks.invalid:{port}/hook", resolve, allow_loopback=True)
    assert outcome is Outcome.DELIVERED
    assert receiver.hosts == [f"hooks.invalid:{port}"]


async def test_a_dns_failure_at_connect_time_is_a_retriable_failure() -> None:
    async with receiving() as (receiver, port):
        resolve = Scripted(["127.0.0.1"], DestinationUnresolved("temporary failure resolving host"))
        config = SenderConfig(timeout_s=5.0, allow_private=False, allow_loopback=True)
        async with make_http_client(settings(allow_loopback=True), resolve) as client:
            sender = WebhookSender(client, config, NotifierMetrics(CollectorRegistry()), resolve=resolve)
            got = await sender.attempt(make_subscription(url=f"http://localhost:{port}/hook"), make_action())
    assert (got.outcome, got.retriable) == (Outcome.FAILED, True)
    assert "temporary failure" in (got.error or "")
    assert receiver.hosts == []


@pytest.mark.parametrize("answer", [["127.0.0.1", PUBLIC], ["10.0.0.7"], ["::ffff:127.0.0.1"]])
async def test_any_disallowed_address_in_the_connect_time_answer_refuses(answer: list[str]) -> None:
    async with receiving() as (receiver, port):
        resolve = Scripted([PUBLIC], answer)
        outcome = await attempt(f"http://localhost:{port}/hook", resolve, allow_loopback=False)
    assert outcome is Outcome.REFUSED and receiver.hosts == []
