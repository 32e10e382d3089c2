"""The HTTP sender against httpx's in-memory transport: headers, retries, refusals, metrics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.delivery import (
    USER_AGENT,
    DeliveryResult,
    Outcome,
    SenderConfig,
    WebhookSender,
    action_age_s,
    build_request,
    encode_body,
)
from notifier.formats import render
from notifier.retry import RetryPolicy
from notifier.signing import sign, webhook_id
from services.destinations import Resolver
from services.metrics import NotifierMetrics
from services.subscriptions import Subscription, generate_secret
from tests.notifier.helpers import make_action, make_subscription, public_resolver

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Harness:
    """A sender on an in-memory transport, a recorded sleep and a fixed clock."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    now_s: float = field(default_factory=time.time)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def sender(
        self, client: httpx.AsyncClient, *, attempts: int = 4, timeout_s: float = 5.0,
        allow_loopback: bool = False, resolve: Resolver = public_resolver,
    ) -> WebhookSender:
        config = SenderConfig(RetryPolicy(attempts=attempts, base_s=1.0), timeout_s,
                              allow_private=False, allow_loopback=allow_loopback)
        return WebhookSender(client, config, NotifierMetrics(self.registry), resolve=resolve,
                             clock=lambda: self.now_s, sleep=self.sleep, jitter=lambda: 0.5)

    def client(self, responses: Iterator[httpx.Response | Exception]) -> httpx.AsyncClient:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            item = next(responses)
            if isinstance(item, Exception):
                raise item
            return item

        return httpx.AsyncClient(transport=httpx.MockTransport(handle))

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def deliver(
    harness: Harness, responses: Sequence[httpx.Response | Exception], sub: Subscription | None = None, **kwargs: Any
) -> DeliveryResult:
    async with harness.client(iter(responses)) as client:
        return await harness.sender(client, **kwargs).deliver(sub or make_subscription(), make_action())


async def test_delivered_request_is_signed_and_well_formed(harness: Harness) -> None:
    sub, action = make_subscription(), make_action()
    async with harness.client(iter([httpx.Response(204)])) as client:
        result = await harness.sender(client).deliver(sub, action)
    assert result.outcome is Outcome.DELIVERED
    assert (result.attempts, result.status, result.error) == (1, 204, None)
    [request] = harness.requests
    assert request.method == "POST"
    assert str(request.url) == sub.url
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["webhook-id"] == webhook_id(action["action_id"], sub.id) == result.webhook_id
    assert request.headers["webhook-timestamp"] == str(int(harness.now_s))
    assert request.content == encode_body(action)
    Webhook(sub.secret).verify(request.content, dict(request.headers))


def test_body_is_compact_standard_webhooks_json() -> None:
    action = make_action()
    body = encode_body(action)
    assert b": " not in body and b", " not in body
    assert json.loads(body) == {"type": action["type"], "timestamp": action["at"], "data": action}


async def test_retries_5xx_then_delivers_with_the_same_webhook_id(harness: Harness) -> None:
    result = await deliver(harness, [httpx.Response(500), httpx.Response(502), httpx.Response(200)])
    assert (result.outcome, result.attempts, result.status) == (Outcome.DELIVERED, 3, 200)
    assert harness.sleeps == [0.75, 1.5]  # base 1s, doubling, jitter 0.5 of the upper half
    assert len({r.headers["webhook-id"] for r in harness.requests}) == 1
    assert harness.metric("fatigue_notifier_attempts_total", result="5xx") == 2
    assert harness.metric("fatigue_notifier_attempts_total", result="2xx") == 1
    assert harness.metric("fatigue_notifier_deliveries_total", outcome="delivered") == 1
    assert harness.metric("fatigue_notifier_delivery_seconds_count") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 302])
async def test_permanent_status_is_not_retried(harness: Harness, status: int) -> None:
    result = await deliver(harness, [httpx.Response(status), httpx.Response(200)])
    assert (result.outcome, result.attempts, result.status) == (Outcome.FAILED, 1, status)
    assert len(harness.requests) == 1
    assert harness.sleeps == []
    assert str(status) in (result.error or "")
    assert harness.metric("fatigue_notifier_deliveries_total", outcome="failed") == 1


@pytest.mark.parametrize("status", [408, 409, 429, 503])
async def test_retriable_status_is_retried(harness: Harness, status: int) -> None:
    result = await deliver(harness, [httpx.Response(status), httpx.Response(200)])
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 2)


async def test_retry_after_seconds_are_honoured_and_capped(harness: Harness) -> None:
    responses = [
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(503, headers={"Retry-After": "86400"}),
        httpx.Response(200),
    ]
    result = await deliver(harness, responses)
    assert result.outcome is Outcome.DELIVERED
    assert harness.sleeps == [7.0, 60.0]


async def test_gives_up_after_the_configured_attempts(harness: Harness) -> None:
    result = await deliver(harness, [httpx.Response(503)] * 5, attempts=3)
    assert (result.outcome, result.attempts, result.status) == (Outcome.FAILED, 3, 503)
    assert len(harness.requests) == 3
    assert len(harness.sleeps) == 2
    assert harness.metric("fatigue_notifier_delivery_seconds_count") == 0


async def test_transport_timeouts_and_connection_errors_are_retried(harness: Harness) -> None:
    responses: list[httpx.Response | Exception] = [
        httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.Response(200),
    ]
    result = await deliver(harness, responses)
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 3)
    assert harness.metric("fatigue_notifier_attempts_total", result="timeout") == 1
    assert harness.metric("fatigue_notifier_attempts_total", result="error") == 1


async def test_a_response_slower_than_the_timeout_counts_as_timeout(harness: Harness) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        harness.requests.append(request)
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        sender = harness.sender(client, attempts=2, timeout_s=0.05)
        result = await asyncio.wait_for(sender.deliver(make_subscription(), make_action()), timeout=5)
    assert (result.outcome, result.attempts, result.status) == (Outcome.FAILED, 2, None)
    assert "0.05" in (result.error or "")
    assert harness.metric("fatigue_notifier_attempts_total", result="timeout") == 2


@pytest.mark.parametrize(
    ("url", "addresses", "allow_loopback"),
    [
        ("https://internal.example.com/x", ["10.0.0.5"], False),
        ("https://meta.example.com/x", ["169.254.169.254"], False),
        ("http://127.0.0.1:8080/x", ["127.0.0.1"], False),
        ("http://10.1.2.3/x", ["10.1.2.3"], True),  # allowing loopback does not allow private
        ("ftp://files.example.com/x", ["93.184.216.34"], False),
    ],
)
async def test_refused_destination_gets_no_request(
    harness: Harness, url: str, addresses: list[str], allow_loopback: bool
) -> None:
    sub = make_subscription(url=url)
    result = await deliver(harness, [httpx.Response(200)], sub, allow_loopback=allow_loopback,
                           resolve=lambda host, port: addresses)
    assert (result.outcome, result.attempts) == (Outcome.REFUSED, 0)
    assert harness.requests == []
    assert harness.metric("fatigue_notifier_deliveries_total", outcome="refused") == 1


async def test_loopback_is_delivered_when_allowed(harness: Harness) -> None:
    sub = make_subscription(url="http://127.0.0.1:8080/x")
    result = await deliver(harness, [httpx.Response(200)], sub, allow_loopback=True,
                           resolve=lambda host, port: ["127.0.0.1"])
    assert result.outcome is Outcome.DELIVERED


async def test_destination_is_checked_again_before_each_attempt(harness: Harness) -> None:
    """DNS rebinding: a name that turns private between attempts is refused on the retry."""
    answers = iter([["93.184.216.34"], ["10.0.0.5"]])
    result = await deliver(harness, [httpx.Response(503), httpx.Response(200)],
                           resolve=lambda host, port: next(answers))
    assert (result.outcome, result.attempts, result.status) == (Outcome.REFUSED, 1, None)
    assert len(harness.requests) == 1


async def test_a_broken_secret_fails_that_delivery_only(harness: Harness) -> None:
    sub = make_subscription()
    sub.secret = "whsec_***"
    result = await deliver(harness, [httpx.Response(200)], sub)
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 0)
    assert "secret" in (result.error or "")
    assert harness.requests == []


@pytest.mark.parametrize(
    ("at", "now_s", "age_s"),
    [
        ("2024-05-01T10:00:00+00:00", 1_714_557_610.0, 10.0),
        ("2024-05-01T10:00:00Z", 1_714_557_600.0, 0.0),
        ("2024-05-01T10:00:10+00:00", 1_714_557_600.0, 0.0),  # clock skew: never negative
        ("2024-05-01T10:00:00", 1_714_557_600.0, None),  # no zone: unknown
        ("yesterday", 1_714_557_600.0, None),
    ],
)
def test_action_age(at: str, now_s: float, age_s: float | None) -> None:
    action = make_action()
    action["at"] = at
    assert action_age_s(action, now_s) == age_s


# --- secret rotation ---------------------------------------------------------------------------------

def rotated_subscription(now_s: float) -> tuple[Subscription, str, str, str]:
    """A subscription whose secret was rotated: one old secret still in its overlap, one expired."""
    sub = make_subscription()
    old, expired = generate_secret(), generate_secret()
    at = datetime.fromtimestamp(now_s, UTC)
    sub.previous_secrets = [
        {"secret": old, "expires_at": (at + timedelta(hours=1)).isoformat()},
        {"secret": expired, "expires_at": (at - timedelta(seconds=1)).isoformat()},
    ]
    return sub, sub.secret, old, expired


async def test_during_a_rotation_the_old_and_the_new_secret_verify_the_same_delivery(harness: Harness) -> None:
    sub, new, old, expired = rotated_subscription(harness.now_s)
    async with harness.client(iter([httpx.Response(204)])) as client:
        result = await harness.sender(client).deliver(sub, make_action())
    assert result.outcome is Outcome.DELIVERED
    [request] = harness.requests
    assert len(request.headers["webhook-signature"].split()) == 2
    Webhook(old).verify(request.content, dict(request.headers))
    Webhook(new).verify(request.content, dict(request.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(expired).verify(request.content, dict(request.headers))


def test_after_the_overlap_only_the_new_secret_signs() -> None:
    now_s = time.time()
    sub, new, _old, _ = rotated_subscription(now_s)
    later_s = now_s + 3601
    request = build_request(sub, make_action(), "msg_1", later_s)
    assert request.headers["webhook-signature"] == sign(new, "msg_1", int(later_s), request.body)


# --- chat formats ------------------------------------------------------------------------------------

def chat_subscription(format_name: str, secret: str | None = None, url: str = "https://bot.example.com/send?k=1"
                      ) -> Subscription:
    sub = make_subscription(url=url)
    sub.format = format_name
    if secret is not None:
        sub.secret = secret
    return sub


@pytest.mark.parametrize("format_name", ["slack", "teams", "wecom", "feishu", "dingtalk"])
def test_chat_request_carries_the_provider_body_and_no_standard_webhooks_signature(format_name: str) -> None:
    sub, action = chat_subscription(format_name), make_action()  # generated whsec_ secret: no provider signing
    request = build_request(sub, action, "msg_1", 1_714_557_600.0)
    assert request.url == sub.url
    assert json.loads(request.body) == render(action, format_name)
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["content-type"] == "application/json"
    assert "webhook-signature" not in request.headers and "webhook-timestamp" not in request.headers


def test_feishu_with_the_bots_secret_signs_in_the_body() -> None:
    sub, action = chat_subscription("feishu", secret="feishu-bot-secret"), make_action()
    request = build_request(sub, action, "msg_1", 1_714_557_600.9)
    body = json.loads(request.body)
    assert body["timestamp"] == "1714557600"  # seconds, as a string
    key = b"1714557600\nfeishu-bot-secret"
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert {k: v for k, v in body.items() if k not in ("timestamp", "sign")} == render(action, "feishu")
    assert request.url == sub.url


def dingtalk_expected_sign(secret: str, timestamp_ms: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_dingtalk_with_the_bots_secret_signs_in_the_query() -> None:
    sub = chat_subscription("dingtalk", secret="SECdingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=t")
    request = build_request(sub, make_action(), "msg_1", 1_714_557_600.25)
    query = parse_qs(urlsplit(request.url).query)
    assert query["access_token"] == ["t"]
    assert query["timestamp"] == ["1714557600250"]  # milliseconds
    assert query["sign"] == [dingtalk_expected_sign("SECdingtalk", "1714557600250")]
    assert "sign" not in json.loads(request.body)


async def test_unknown_format_fails_that_delivery_without_a_request(harness: Harness) -> None:
    sub = chat_subscription("carrier-pigeon")
    result = await deliver(harness, [httpx.Response(200)], sub)
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 0)
    assert "carrier-pigeon" in (result.error or "")
    assert harness.requests == []


# --- a real HTTP receiver on loopback ------------------------------------------------------------------

@dataclass
class Got:
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@pytest.fixture
async def loopback_receiver() -> AsyncIterator[tuple[str, list[Got]]]:
    got: list[Got] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(Got(parse_qs(request.query_string), dict(request.headers), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook", got
    finally:
        await runner.cleanup()
        sock.close()


async def deliver_over_http(sub: Subscription, action: Any) -> DeliveryResult:
    harness = Harness()
    async with httpx.AsyncClient() as client:
        sender = harness.sender(client, allow_loopback=True, resolve=lambda host, port: ["127.0.0.1"])
        return await sender.deliver(sub, action)


async def test_slack_subscription_receives_a_slack_message_over_http(
    loopback_receiver: tuple[str, list[Got]],
) -> None:
    url, got = loopback_receiver
    action = make_action()
    result = await deliver_over_http(chat_subscription("slack", url=url), action)
    assert result.outcome is Outcome.DELIVERED
    [received] = got
    body = json.loads(received.body)
    assert body == render(action, "slack")
    assert [block["type"] for block in body["blocks"]] == ["header", "section", "context"]
    assert "webhook-signature" not in received.headers


async def test_dingtalk_subscription_gets_a_verifiable_timestamp_and_sign_over_http(
    loopback_receiver: tuple[str, list[Got]],
) -> None:
    url, got = loopback_receiver
    before_ms = int(time.time() * 1000)
    result = await deliver_over_http(chat_subscription("dingtalk", secret="SECdingtalk", url=f"{url}?access_token=t"),
                                     make_action())
    assert result.outcome is Outcome.DELIVERED
    [received] = got
    assert received.query["access_token"] == ["t"]
    [timestamp_ms], [sign] = received.query["timestamp"], received.query["sign"]
    assert abs(int(timestamp_ms) - before_ms) < 60_000  # DingTalk allows an hour
    assert sign == dingtalk_expected_sign("SECdingtalk", timestamp_ms)
    assert json.loads(received.body)["msgtype"] == "markdown"


async def test_rotated_standard_subscription_verifies_with_both_secrets_over_http(
    loopback_receiver: tuple[str, list[Got]],
) -> None:
    url, got = loopback_receiver
    sub, new, old, _ = rotated_subscription(time.time())
    sub.url = url
    assert (await deliver_over_http(sub, make_action())).outcome is Outcome.DELIVERED
    [received] = got
    Webhook(old).verify(received.body, received.headers)
    Webhook(new).verify(received.body, received.headers)
