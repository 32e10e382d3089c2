"""The HTTP sender against httpx's in-memory transport: headers, outcomes, refusals, metrics.

`WebhookSender.attempt` makes one attempt; waiting and retrying is the scheduler's (test_retry.py
covers the schedule, `next_delay_s`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
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
    AttemptOutcome,
    DeliveryResult,
    Outcome,
    SenderConfig,
    WebhookSender,
    action_age_s,
    build_request,
    encode_body,
)
from notifier.formats import render
from notifier.signing import sign, webhook_id
from services.delivery.destinations import Resolver
from services.delivery.subscriptions import Subscription, generate_secret
from services.errors import DestinationUnresolved
from services.metrics import NotifierMetrics
from tests.notifier.helpers import make_action, make_subscription, public_resolver
from tests.notifier.receivers import serving_on_loopback

Handler = Callable[[httpx.Request], httpx.Response]
ATTEMPTS = "fatigue_notifier_attempts_total"


@dataclass
class Harness:
    """A sender on an in-memory transport with a settable clock."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    requests: list[httpx.Request] = field(default_factory=list)
    now_s: float = field(default_factory=time.time)

    def sender(
        self, client: httpx.AsyncClient, *, timeout_s: float = 5.0,
        allow_loopback: bool = False, resolve: Resolver = public_resolver,
    ) -> WebhookSender:
        config = SenderConfig(timeout_s, allow_private=False, allow_loopback=allow_loopback)
        return WebhookSender(client, config, NotifierMetrics(self.registry), resolve=resolve,
                             clock=lambda: self.now_s)

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

    def attempts_counted(self) -> float:
        """Every sample of the attempts counter, whatever its result label."""
        return sum(sample.value for metric in self.registry.collect() for sample in metric.samples
                   if sample.name == ATTEMPTS)


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def attempts(
    harness: Harness, responses: Sequence[httpx.Response | Exception], count: int,
    sub: Subscription | None = None, **kwargs: Any,
) -> list[AttemptOutcome]:
    """`count` attempts of one action to one subscription by one sender, the clock 5 s on each time."""
    sub, action, outcomes = sub or make_subscription(), make_action(), []
    async with harness.client(iter(responses)) as client:
        sender = harness.sender(client, **kwargs)
        for _ in range(count):
            outcomes.append(await sender.attempt(sub, action))
            harness.now_s += 5
    return outcomes


async def attempt(
    harness: Harness, responses: Sequence[httpx.Response | Exception], sub: Subscription | None = None, **kwargs: Any
) -> AttemptOutcome:
    [got] = await attempts(harness, responses, 1, sub, **kwargs)
    return got


async def test_delivered_request_is_signed_and_well_formed(harness: Harness) -> None:
    sub, action = make_subscription(), make_action()
    async with harness.client(iter([httpx.Response(204)])) as client:
        got = await harness.sender(client).attempt(sub, action)
    assert got == AttemptOutcome(Outcome.DELIVERED, retriable=False, status=204, error=None, sent=True)
    [request] = harness.requests
    assert request.method == "POST"
    assert str(request.url) == sub.url
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["webhook-id"] == webhook_id(action["action_id"], sub.id)
    assert request.headers["webhook-timestamp"] == str(int(harness.now_s))
    assert request.content == encode_body(action)
    Webhook(sub.secret).verify(request.content, dict(request.headers))
    assert harness.metric(ATTEMPTS, result="2xx") == 1


async def test_finish_counts_by_outcome_and_format_and_times_delivered_ones(harness: Harness) -> None:
    action = make_action()
    harness.now_s = datetime.fromisoformat(action["at"]).timestamp() + 1.5
    async with harness.client(iter([])) as client:
        sender = harness.sender(client)
        delivered = DeliveryResult("sub_a", "https://x", action["action_id"], "msg_1", Outcome.DELIVERED, 1, 200)
        assert sender.finish(action, delivered, "slack") is delivered
        sender.finish(action, DeliveryResult("sub_a", "https://x", action["action_id"], "msg_1", Outcome.FAILED, 7),
                      "standard")
    assert harness.metric("fatigue_notifier_deliveries_total", outcome="delivered", format="slack") == 1
    assert harness.metric("fatigue_notifier_deliveries_total", outcome="failed", format="standard") == 1
    assert harness.metric("fatigue_notifier_delivery_seconds_count") == 1  # failures are not timed
    assert harness.metric("fatigue_notifier_delivery_seconds_sum") == pytest.approx(1.5, abs=0.01)


def test_body_is_compact_standard_webhooks_json() -> None:
    action = make_action()
    body = encode_body(action)
    assert b": " not in body and b", " not in body
    assert json.loads(body) == {"type": action["type"], "timestamp": action["at"], "data": action}


async def test_each_attempt_keeps_the_webhook_id_is_signed_afresh_and_is_counted(harness: Harness) -> None:
    sub = make_subscription()
    started_s = harness.now_s
    got = await attempts(harness, [httpx.Response(500), httpx.Response(502), httpx.Response(200)], 3, sub)
    assert [(g.outcome, g.retriable, g.status) for g in got] == [
        (Outcome.FAILED, True, 500), (Outcome.FAILED, True, 502), (Outcome.DELIVERED, False, 200),
    ]
    assert len({r.headers["webhook-id"] for r in harness.requests}) == 1
    timestamps = [int(r.headers["webhook-timestamp"]) for r in harness.requests]
    assert timestamps == [int(started_s), int(started_s + 5), int(started_s + 10)]
    for request in harness.requests:
        Webhook(sub.secret).verify(request.content, dict(request.headers))
    assert harness.metric(ATTEMPTS, result="5xx") == 2
    assert harness.metric(ATTEMPTS, result="2xx") == 1


@pytest.mark.parametrize(
    ("status", "label"),
    [(400, "4xx"), (401, "4xx"), (403, "4xx"), (404, "4xx"), (410, "4xx"), (422, "4xx"),
     (301, "3xx"), (302, "3xx"), (307, "3xx")],
)
async def test_permanent_status_is_not_retriable(harness: Harness, status: int, label: str) -> None:
    got = await attempt(harness, [httpx.Response(status, headers={"Retry-After": "5"})])
    assert (got.outcome, got.retriable, got.status, got.sent) == (Outcome.FAILED, False, status, True)
    assert got.retry_after_s is None  # a permanent failure is not retried, whatever it asks
    assert str(status) in (got.error or "")
    assert len(harness.requests) == 1
    assert harness.metric(ATTEMPTS, result=label) == 1


@pytest.mark.parametrize(
    ("status", "label"),
    [(408, "4xx"), (409, "4xx"), (429, "4xx"), (500, "5xx"), (502, "5xx"), (503, "5xx"), (504, "5xx")],
)
async def test_retriable_status_is_retriable(harness: Harness, status: int, label: str) -> None:
    got = await attempt(harness, [httpx.Response(status)])
    assert (got.outcome, got.retriable, got.status, got.sent) == (Outcome.FAILED, True, status, True)
    assert got.retry_after_s is None
    assert str(status) in (got.error or "")
    assert harness.metric(ATTEMPTS, result=label) == 1


@pytest.mark.parametrize(
    ("status", "header", "seconds"),
    [
        (429, "7", 7.0),
        (503, "86400", 86400.0),  # passed on as asked: next_delay_s caps it at the schedule's longest step
        (503, " 2.5 ", 2.5),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", None),  # HTTP dates are not honoured
        (429, "soon", None),
        (503, None, None),
    ],
)
async def test_retry_after_seconds_of_a_retriable_response_are_reported(
    harness: Harness, status: int, header: str | None, seconds: float | None
) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    got = await attempt(harness, [httpx.Response(status, headers=headers)])
    assert (got.outcome, got.retriable, got.retry_after_s) == (Outcome.FAILED, True, seconds)


@pytest.mark.parametrize(
    ("error", "retriable", "label", "message"),
    [
        (httpx.ReadTimeout("slow"), True, "timeout", "no response within 5.0s"),
        (httpx.ConnectTimeout("slow"), True, "timeout", "no response within 5.0s"),
        (httpx.ConnectError("refused"), True, "error", "connection failed"),
        (httpx.RemoteProtocolError("garbage"), True, "error", "connection failed"),
        (httpx.DecodingError("unexpected"), False, "error", "request failed"),
    ],
)
async def test_timeouts_and_connection_errors_are_retriable_other_request_errors_not(
    harness: Harness, error: Exception, retriable: bool, label: str, message: str
) -> None:
    got = await attempt(harness, [error])
    assert (got.outcome, got.retriable, got.status, got.sent) == (Outcome.FAILED, retriable, None, True)
    assert message in (got.error or "")
    assert harness.metric(ATTEMPTS, result=label) == 1
    assert harness.attempts_counted() == 1


async def test_a_response_slower_than_the_timeout_counts_as_timeout(harness: Harness) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        harness.requests.append(request)
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        sender = harness.sender(client, timeout_s=0.05)
        got = await asyncio.wait_for(sender.attempt(make_subscription(), make_action()), timeout=5)
    assert (got.outcome, got.retriable, got.status, got.sent) == (Outcome.FAILED, True, None, True)
    assert "0.05" in (got.error or "")
    assert len(harness.requests) == 1
    assert harness.metric(ATTEMPTS, result="timeout") == 1


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
    got = await attempt(harness, [httpx.Response(200)], sub, allow_loopback=allow_loopback,
                        resolve=lambda host, port: addresses)
    assert (got.outcome, got.retriable, got.status, got.sent) == (Outcome.REFUSED, False, None, False)
    assert got.error
    assert harness.requests == []
    assert harness.attempts_counted() == 0


async def test_loopback_is_delivered_when_allowed(harness: Harness) -> None:
    sub = make_subscription(url="http://127.0.0.1:8080/x")
    got = await attempt(harness, [httpx.Response(200)], sub, allow_loopback=True,
                        resolve=lambda host, port: ["127.0.0.1"])
    assert (got.outcome, got.status) == (Outcome.DELIVERED, 200)


async def test_destination_is_checked_again_before_each_attempt(harness: Harness) -> None:
    """DNS rebinding: a name that turns private between attempts is refused on the retry."""
    answers = iter([["93.184.216.34"], ["10.0.0.5"]])
    first, second = await attempts(harness, [httpx.Response(503), httpx.Response(200)], 2,
                                   resolve=lambda host, port: next(answers))
    assert (first.outcome, first.retriable, first.status) == (Outcome.FAILED, True, 503)
    assert (second.outcome, second.sent, second.status) == (Outcome.REFUSED, False, None)
    assert len(harness.requests) == 1


async def test_a_temporary_dns_failure_is_retriable_like_a_connection_error(harness: Harness) -> None:
    def unresolved(host: str, port: int) -> list[str]:
        raise DestinationUnresolved(f"temporary failure resolving host {host!r}")

    got = await attempt(harness, [httpx.Response(200)], resolve=unresolved)
    assert (got.outcome, got.retriable, got.status) == (Outcome.FAILED, True, None)
    assert "temporary failure" in (got.error or "")
    assert harness.requests == []
    assert harness.metric(ATTEMPTS, result="error") == 1


async def test_a_broken_secret_fails_that_delivery_only(harness: Harness) -> None:
    sub = make_subscription()
    sub.secret = "whsec_***"
    got = await attempt(harness, [httpx.Response(200)], sub)
    assert (got.outcome, got.retriable, got.sent) == (Outcome.FAILED, False, False)
    assert "secret" in (got.error or "")
    assert harness.requests == []
    assert harness.attempts_counted() == 0


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
        got = await harness.sender(client).attempt(sub, make_action())
    assert got.outcome is Outcome.DELIVERED
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
    got = await attempt(harness, [httpx.Response(200)], sub)
    assert (got.outcome, got.retriable, got.sent) == (Outcome.FAILED, False, False)
    assert "carrier-pigeon" in (got.error or "")
    assert harness.requests == []
    assert harness.attempts_counted() == 0


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

    async with serving_on_loopback(handle) as url:
        yield url, got


async def attempt_over_http(sub: Subscription, action: Any) -> AttemptOutcome:
    harness = Harness()
    async with httpx.AsyncClient() as client:
        sender = harness.sender(client, allow_loopback=True, resolve=lambda host, port: ["127.0.0.1"])
        return await sender.attempt(sub, action)


async def test_slack_subscription_receives_a_slack_message_over_http(
    loopback_receiver: tuple[str, list[Got]],
) -> None:
    url, got = loopback_receiver
    action = make_action()
    outcome = await attempt_over_http(chat_subscription("slack", url=url), action)
    assert outcome.outcome is Outcome.DELIVERED
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
    outcome = await attempt_over_http(
        chat_subscription("dingtalk", secret="SECdingtalk", url=f"{url}?access_token=t"), make_action()
    )
    assert outcome.outcome is Outcome.DELIVERED
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
    assert (await attempt_over_http(sub, make_action())).outcome is Outcome.DELIVERED
    [received] = got
    Webhook(old).verify(received.body, received.headers)
    Webhook(new).verify(received.body, received.headers)


@pytest.mark.parametrize(("body_bytes", "reused"), [(0, True), (2_000, True), (200_000, False)])
async def test_the_connection_is_kept_for_the_next_webhook_unless_the_answer_is_large(
    body_bytes: int, reused: bool
) -> None:
    peers: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(status=200, body=b"x" * body_bytes)

    async with serving_on_loopback(handle) as url, httpx.AsyncClient() as client:
        sub = make_subscription(url=url)
        sender = Harness().sender(client, allow_loopback=True, resolve=lambda host, port: ["127.0.0.1"])
        outcomes = [await sender.attempt(sub, make_action()) for _ in range(3)]
    assert [o.outcome for o in outcomes] == [Outcome.DELIVERED] * 3  # a large answer is no failure
    assert (len(set(peers)) == 1) is reused  # one TCP connection (and TLS handshake) for all three
