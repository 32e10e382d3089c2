"""The sending side of the notifier: claim due deliveries from Redis, make one attempt each, record it.

After an attempt a delivery is either delivered (ledger marked), rescheduled at the next step of
the retry schedule (a longer `Retry-After` honoured), or dead-lettered (permanent failure, refused
destination, deleted subscription, schedule spent). Deliveries run as separate tasks, at most
`concurrency` at once, so a slow endpoint never holds back another one. A claim lasts `lease_s`:
if this process dies mid-attempt, the delivery becomes due again after that (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from notifier.delivery import AttemptOutcome, DeliveryResult, Outcome
from notifier.dispatch import SubscriptionSource, redact_url
from notifier.ledger import DeliveryLedger
from notifier.retry import next_delay_s
from services.actions import Action
from services.deliveries import DeliveryRecord, DeliveryStore
from services.metrics import NotifierMetrics
from services.subscriptions import Subscription

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 1.0


class Attempter(Protocol):
    async def attempt(self, sub: Subscription, action: Action) -> AttemptOutcome:
        """One attempt; never raises for a failed delivery."""
        ...

    def finish(self, action: Action, result: DeliveryResult) -> DeliveryResult:
        """Count a finished delivery."""
        ...


class DeliveryScheduler:
    def __init__(
        self,
        store: DeliveryStore,
        subscriptions: SubscriptionSource,
        ledger: DeliveryLedger,
        sender: Attempter,
        metrics: NotifierMetrics,
        *,
        schedule_s: Sequence[float],
        lease_s: float,
        concurrency: int = 32,
        poll_s: float = 0.2,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._ledger = ledger
        self._sender = sender
        self._metrics = metrics
        self._schedule_s = list(schedule_s)
        self._lease_ms = int(lease_s * 1000)
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._jitter = jitter
        self._monotonic = monotonic
        self._gauges_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set, then let those in flight finish.

        Store errors (StoreUnavailable) propagate; deliveries in flight are then cancelled and,
        their claims expiring, sent again later.
        """
        inflight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                _reap(inflight)
                free = self._concurrency - len(inflight)
                claimed = await self._store.claim_due(self._store.now_ms(), self._lease_ms, free)
                inflight.update(asyncio.create_task(self._process(rec)) for rec in claimed)
                await self._update_gauges()
                if not claimed:
                    await _wait_any(stop, inflight, self._poll_s)
            await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _update_gauges(self) -> None:
        if self._monotonic() - self._gauges_at < GAUGE_INTERVAL_S:
            return
        self._gauges_at = self._monotonic()
        self._metrics.pending_deliveries.set(await self._store.count("pending"))
        self._metrics.dead_letter_deliveries.set(await self._store.count("failed"))

    async def _process(self, rec: DeliveryRecord) -> None:
        action = rec.action
        sub = await self._subscriptions.get(rec.subscription_id)
        if sub is None:
            await self._dead_letter(rec, DeliveryResult(
                rec.subscription_id, "", action["action_id"], rec.id, Outcome.FAILED, rec.attempts,
                error="the subscription no longer exists"))
            return
        if await self._ledger.seen(action["action_id"], sub.id):  # sent before a crash, ledger marked
            await self._store.mark_delivered(rec.id, attempts=rec.attempts, last_status=rec.last_status)
            return
        if sub.rate_limit_per_minute and await self._rate_limited(rec, sub):
            return
        got = await self._sender.attempt(sub, action)
        attempts = rec.attempts + (1 if got.sent else 0)
        result = DeliveryResult(sub.id, sub.url, action["action_id"], rec.id, got.outcome, attempts,
                                status=got.status, error=got.error)
        if got.outcome is Outcome.DELIVERED:
            await self._ledger.mark(action["action_id"], sub.id)
            await self._store.mark_delivered(rec.id, attempts=attempts, last_status=got.status)
            self._sender.finish(action, result)
            return
        delay_s = next_delay_s(self._schedule_s, attempts, self._jitter(), got.retry_after_s) if got.retriable else None
        if delay_s is None:
            await self._dead_letter(rec, result)
            return
        self._metrics.retries.inc()
        next_ms = self._store.now_ms() + int(delay_s * 1000)
        await self._store.reschedule(rec.id, next_ms=next_ms, attempts=attempts, last_status=got.status,
                                     last_error=got.error)
        log.info("webhook %s attempt %d to %s failed (%s); next in %.1fs",
                 rec.id, attempts, redact_url(sub.url), got.error, delay_s)

    async def _rate_limited(self, rec: DeliveryRecord, sub: Subscription) -> bool:
        """Over the subscription's per-minute limit: wait for the next minute (not an attempt)."""
        assert sub.rate_limit_per_minute is not None
        now_ms = self._store.now_ms()
        wait_ms = await self._store.take_rate_slot(sub.id, sub.rate_limit_per_minute, now_ms)
        if not wait_ms:
            return False
        self._metrics.rate_limited.inc()
        await self._store.reschedule(rec.id, next_ms=now_ms + wait_ms, attempts=rec.attempts,
                                     last_status=rec.last_status, last_error="held back by rate_limit_per_minute")
        return True

    async def _dead_letter(self, rec: DeliveryRecord, result: DeliveryResult) -> None:
        await self._store.mark_failed(rec.id, attempts=result.attempts, last_status=result.status,
                                      last_error=result.error)
        self._sender.finish(rec.action, result)
        _log_undelivered(rec.action, result)


def _reap(inflight: set[asyncio.Task[None]]) -> None:
    """Forget finished tasks; re-raise the first error among them."""
    done = {task for task in inflight if task.done()}
    inflight.difference_update(done)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _wait_any(stop: asyncio.Event, inflight: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Until `stop` is set, a delivery finishes, or `timeout_s` passed."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopped, *inflight}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopped


def _log_undelivered(action: Action, result: DeliveryResult) -> None:
    log.error(
        "webhook %s dead-lettered: action=%s type=%s customer=%s subscription=%s destination=%s "
        "outcome=%s attempts=%d last_status=%s error=%s",
        result.webhook_id, result.action_id, action["type"], action.get("customer_id"),
        result.subscription_id, redact_url(result.url), result.outcome.value, result.attempts,
        result.status, result.error,
    )
