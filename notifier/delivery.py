"""The HTTP sender: one attempt of one action to one subscription, signed.

Each attempt re-checks the destination (DNS may have changed since the subscription was created),
builds the request for the subscription's format with a fresh timestamp (`build_request`, pure)
and POSTs it. The outcome says what happened and whether another attempt may succeed; nothing
here raises for a failed delivery and nothing here waits to retry: retries are scheduled durably
by notifier/scheduler.py on `retry_schedule_s` (`retry.next_delay_s`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import httpx

from notifier import chat_signing, formats, retry, signing
from services.actions import Action, webhook_body
from services.delivery.destinations import Resolver, check_destination, system_resolver
from services.delivery.subscriptions import Subscription
from services.errors import ConfigError, DeliveryFailed, DestinationRefused, DestinationUnresolved
from services.metrics import NotifierMetrics
from services.names import HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP

log = logging.getLogger(__name__)

USER_AGENT = "contact-fatigue-notifier/0.1"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent error, or retries exhausted
    REFUSED = "refused"  # destination not allowed (private/loopback/unresolvable)


@dataclass(frozen=True)
class DeliveryResult:
    subscription_id: str
    url: str
    action_id: str
    webhook_id: str
    outcome: Outcome
    attempts: int
    status: int | None = None
    """HTTP status of the last attempt, None when no response came back."""
    error: str | None = None


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt did. `sent`: an HTTP request went out (False: refused or misconfigured)."""

    outcome: Outcome
    retriable: bool = False
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    sent: bool = True


class AttemptFailed(DeliveryFailed):
    """One HTTP attempt failed; `result` is its metric label (4xx, 5xx, timeout, error …)."""

    def __init__(
        self, message: str, *, retriable: bool, result: str, status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable, retry_after_s=retry_after_s)
        self.result = result
        self.status = status


@dataclass(frozen=True)
class SenderConfig:
    timeout_s: float
    allow_private: bool
    allow_loopback: bool


def encode_body(action: Action) -> bytes:
    """The webhook body: compact JSON of `{"type", "timestamp", "data"}`."""
    return _json(webhook_body(action))


@dataclass(frozen=True)
class OutgoingRequest:
    url: str
    headers: dict[str, str]
    body: bytes


def _json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def build_request(sub: Subscription, action: Action, msg_id: str, now_s: float) -> OutgoingRequest:
    """The request of one attempt at `now_s`. Raises ConfigError for an unusable format or secret.

    `standard`: Standard Webhooks headers, signed with every secret of `sub.signing_secrets`
    (current plus rotated-out ones in their overlap). Chat formats: the provider's body; Feishu and
    DingTalk are signed the provider's way when `sub.secret` is the bot's own secret (not `whsec_…`),
    and @-mention the owner rep's chat user id from `sub.mentions`.
    """
    timestamp_s = int(now_s)
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, HEADER_WEBHOOK_ID: msg_id}
    if sub.format == "standard":
        body = encode_body(action)
        secrets = sub.signing_secrets(datetime.fromtimestamp(now_s, UTC))
        headers[HEADER_WEBHOOK_TIMESTAMP] = str(timestamp_s)
        headers[HEADER_WEBHOOK_SIGNATURE] = signing.sign_all(secrets, msg_id, timestamp_s, body)
        return OutgoingRequest(sub.url, headers, body)
    payload, url = formats.render(action, sub.format, sub.mentions), sub.url
    secret = chat_signing.provider_secret(sub.secret)
    if secret and sub.format == "feishu":
        payload |= {"timestamp": str(timestamp_s), "sign": chat_signing.feishu_sign(secret, timestamp_s)}
    elif secret and sub.format == "dingtalk":
        url = chat_signing.dingtalk_signed_url(url, secret, int(now_s * 1000))
    return OutgoingRequest(url, headers, _json(payload))


def action_age_s(action: Action, now_s: float) -> float | None:
    """Seconds since the action's `at`, or None if `at` is not a timestamp."""
    try:
        created = datetime.fromisoformat(action["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if created.tzinfo is None:
        return None
    return max(0.0, now_s - created.timestamp())


class WebhookSender:
    """Sends actions over HTTP, one attempt at a time. `clock` and `resolve` are injectable for tests."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        config: SenderConfig,
        metrics: NotifierMetrics,
        *,
        resolve: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._config = config
        self._metrics = metrics
        self._resolve = resolve
        self._clock = clock

    async def attempt(self, sub: Subscription, action: Action) -> AttemptOutcome:
        """One HTTP attempt (destination checked, freshly signed); counts it in the attempts metric.

        Never raises for a failed attempt: the outcome says whether another one may succeed.
        """
        msg_id = signing.webhook_id(action["action_id"], sub.id)
        try:
            await self._check_destination(sub.url)
            status = await self._attempt(build_request(sub, action, msg_id, self._clock()))
        except DestinationRefused as exc:
            return AttemptOutcome(Outcome.REFUSED, sent=False, error=str(exc))
        except ConfigError as exc:  # bad secret or format: no attempt can succeed
            return AttemptOutcome(Outcome.FAILED, sent=False, error=str(exc))
        except AttemptFailed as exc:
            self._metrics.attempts.labels(result=exc.result).inc()
            return AttemptOutcome(Outcome.FAILED, retriable=exc.retriable, status=exc.status, error=str(exc),
                                  retry_after_s=exc.retry_after_s)
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:  # the URL or a header cannot be sent as is
            self._metrics.attempts.labels(result="error").inc()
            return AttemptOutcome(Outcome.FAILED, sent=False, error=f"the request cannot be built: {exc!r}")
        except Exception as exc:  # whatever else one attempt raises fails that attempt, never the notifier
            log.exception("attempt to subscription %s failed unexpectedly", sub.id)
            self._metrics.attempts.labels(result="error").inc()
            return AttemptOutcome(Outcome.FAILED, retriable=True, error=f"unexpected error: {exc!r}")
        self._metrics.attempts.labels(result=retry.status_class(status)).inc()
        return AttemptOutcome(Outcome.DELIVERED, status=status)

    async def _check_destination(self, url: str) -> None:
        """check_destination resolves the host with a blocking call: run it in a thread."""
        try:
            await asyncio.to_thread(
                check_destination,
                url,
                allow_private=self._config.allow_private,
                allow_loopback=self._config.allow_loopback,
                resolve=self._resolve,
            )
        except DestinationUnresolved as exc:  # temporary DNS failure: like a connection error
            raise AttemptFailed(str(exc), retriable=True, result="error") from exc

    async def _attempt(self, request: OutgoingRequest) -> int:
        """POST once; return the 2xx status or raise AttemptFailed.

        Once the status is in, the outcome is decided; up to MAX_DRAIN_BYTES of the body are then
        read (within DRAIN_S) only so the connection can be reused for the next webhook (keep-alive:
        no new TCP and TLS handshake per delivery). A body that is larger, slower or broken just
        closes the connection.
        """
        timeout_s = self._config.timeout_s
        try:
            async with (
                asyncio.timeout(timeout_s) as deadline,
                self._client.stream("POST", request.url, content=request.body, headers=request.headers,
                                    timeout=timeout_s) as response,
            ):
                status, retry_after = response.status_code, response.headers.get("retry-after")
                deadline.reschedule(None)
                await _drain(response)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise AttemptFailed(f"no response within {timeout_s}s", retriable=True, result="timeout") from exc
        except DestinationUnresolved as exc:  # DNS failed when the connection was opened (notifier/pinned.py)
            raise AttemptFailed(str(exc), retriable=True, result="error") from exc
        except httpx.TransportError as exc:
            raise AttemptFailed(f"connection failed: {exc!r}", retriable=True, result="error") from exc
        except httpx.HTTPError as exc:
            raise AttemptFailed(f"request failed: {exc!r}", retriable=False, result="error") from exc
        return check_status(status, retry_after)

    def finish(self, action: Action, result: DeliveryResult, format_name: str) -> DeliveryResult:
        """Count a finished delivery by outcome and subscription format (and its age when delivered)."""
        self._metrics.deliveries.labels(outcome=result.outcome.value, format=format_name).inc()
        if result.outcome is Outcome.DELIVERED:
            age_s = action_age_s(action, self._clock())
            if age_s is not None:
                self._metrics.delivery_seconds.observe(age_s)
        return result


MAX_DRAIN_BYTES = 64 * 1024
DRAIN_S = 1.0


async def _drain(response: httpx.Response) -> None:
    """Read a small response body to its end so httpx can pool the connection; give up quietly."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_S):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_DRAIN_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError, httpx.StreamError):  # StreamError: already read (in-memory transports)
        return


def check_status(status: int, retry_after: str | None = None) -> int:
    """Return a 2xx status; raise AttemptFailed saying whether another attempt may succeed."""
    if retry.is_success(status):
        return status
    retriable = retry.is_retriable_status(status)
    raise AttemptFailed(
        f"destination answered HTTP {status}",
        retriable=retriable,
        result=retry.status_class(status),
        status=status,
        retry_after_s=retry.parse_retry_after_s(retry_after) if retriable else None,
    )
