"""The sending side of the notifier: claim due deliveries from Redis, make one attempt each, record it.

Before an attempt a claimed delivery passes, in order: the subscription still exists (a digest
coming due is frozen then: its record takes the window's alerts) and is enabled (else
dead-lettered without an attempt); the ledger (already sent before a crash: marked delivered);
the per-rep storm limit (folded into a digest, services/delivery/digests.py); the per-endpoint concurrency
cap, the subscription's rate limit and the endpoint's circuit breaker (services/delivery/health.py)
— these three only *defer* it, without spending an attempt.

After an attempt a delivery is either delivered (ledger marked), rescheduled at the next step of
the retry schedule (a longer `Retry-After` honoured), or dead-lettered (permanent failure, refused
destination, schedule spent). Every HTTP attempt is recorded in the endpoint's health; an endpoint
failing without a success for `disable_after_s` gets its subscription disabled.

Deliveries run as separate tasks, at most `concurrency` at once; attempts to one subscription at
most `per_endpoint` at once (as many more wait for a slot, the rest are deferred), so a slow
endpoint never holds back another one. A claim lasts `lease_s`: if this process dies
mid-attempt, the delivery becomes due again after that (at-least-once).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from notifier.delivery import AttemptOutcome, DeliveryResult, Outcome
from notifier.dispatch import SubscriptionSource, redact_url
from notifier.ledger import DeliveryLedger
from notifier.retry import next_delay_s
from notifier.signing import webhook_id
from services.actions import Action
from services.delivery.digests import DigestStore, is_frozen
from services.delivery.health import STATES, EndpointHealthStore
from services.delivery.store import DeliveryRecord, DeliveryStore
from services.delivery.subscriptions import Subscription
from services.errors import StoreUnavailable
from services.logs import log_context
from services.metrics import NotifierMetrics
from services.names import ACTION_DIGEST, ACTION_TYPES
from services.redisio import REDIS_ERRORS

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 1.0


class Attempter(Protocol):
    async def attempt(self, sub: Subscription, action: Action) -> AttemptOutcome:
        """One attempt; never raises for a failed delivery."""
        ...

    def finish(self, action: Action, result: DeliveryResult, format_name: str) -> DeliveryResult:
        """Count a finished delivery."""
        ...


class EndpointSubscriptions(SubscriptionSource, Protocol):
    async def list(self) -> builtins.list[Subscription]:
        """Every subscription (for the endpoint-state gauge)."""
        ...

    async def disable(self, sub_id: str, *, reason: str) -> bool:
        """Disable one subscription; True only for the call that disabled it."""
        ...


BUSY_DEFER_MIN_MS = 20
BUSY_DEFER_MAX_MS = 1_000
"""A delivery to an endpoint at its concurrency cap looks again after about one of that endpoint's
recent attempt durations, within these bounds: soon for a fast endpoint taking a burst, rarely (few
Redis round trips) for a slow one."""
WAIT_FOR_SLOT_MAX_MS = 250.0
"""Deliveries wait in-process for a slot only at endpoints whose recent attempts took at most this long."""
ATTEMPT_EWMA_WEIGHT = 0.2
NOT_A_BREAKER_FAILURE = frozenset({429})
"""Statuses that say "slow down", not "broken": Retry-After paces them; they do not open the circuit."""


class DeliveryScheduler:
    def __init__(
        self,
        store: DeliveryStore,
        subscriptions: EndpointSubscriptions,
        ledger: DeliveryLedger,
        sender: Attempter,
        metrics: NotifierMetrics,
        health: EndpointHealthStore,
        digests: DigestStore,
        *,
        schedule_s: Sequence[float],
        lease_s: float,
        concurrency: int = 32,
        per_endpoint: int = 4,
        poll_s: float = 0.2,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._ledger = ledger
        self._sender = sender
        self._metrics = metrics
        self._health = health
        self._digests = digests
        self._schedule_s = list(schedule_s)
        self._lease_ms = int(lease_s * 1000)
        self._concurrency = concurrency
        self._per_endpoint = per_endpoint
        self._slots: dict[str, asyncio.Semaphore] = {}  # per subscription: attempts in flight
        self._waiting: Counter[str] = Counter()  # per subscription: deliveries waiting for a slot
        self._attempt_ms: dict[str, float] = {}  # per subscription: moving average of attempt durations
        self._poll_s = poll_s
        self._jitter = jitter
        self._monotonic = monotonic
        self._gauges_at = float("-inf")
        self._woken = asyncio.Event()
        self.on_round: Callable[[], None] = lambda: None
        """Called once per round of the loop below (the notifier's liveness heartbeat)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set, then let those in flight finish.

        Store errors (StoreUnavailable) propagate; deliveries in flight are then cancelled and,
        their claims expiring, sent again later.
        """
        inflight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                self.on_round()
                _reap(inflight)
                self._woken.clear()  # before claiming: a wake-up from now on ends the wait below
                free = self._concurrency - len(inflight)
                claimed = await self._store.claim_due(self._store.now_ms(), self._lease_ms, free)
                for rec in claimed:  # every line logged for a delivery names it and its action
                    with log_context(action_id=rec.action.get("action_id"), delivery_id=rec.id):
                        inflight.add(asyncio.create_task(self._process(rec)))
                await self._update_gauges()
                if not claimed:
                    await _wait_any((stop, self._woken), inflight, self._poll_s)
            await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    def wake(self) -> None:
        """New deliveries were scheduled in this process: look for due ones now, not at the next poll.
        (Deliveries scheduled by other notifiers, retries and deferrals are found by polling.)"""
        self._woken.set()

    async def _update_gauges(self) -> None:
        if self._monotonic() - self._gauges_at < GAUGE_INTERVAL_S:
            return
        self._gauges_at = self._monotonic()
        self._metrics.pending_deliveries.set(await self._store.count("pending"))
        self._metrics.dead_letter_deliveries.set(await self._store.count("failed"))
        subs = await self._subscriptions.list()
        health = await self._health.get_many(sub.id for sub in subs)
        states = Counter(health[sub.id].state(enabled=sub.enabled) for sub in subs)
        for state in STATES:
            self._metrics.endpoints.labels(state=state).set(states[state])

    async def _process(self, rec: DeliveryRecord) -> None:
        """One claimed delivery. Store outages propagate (the claim lapses and it is sent later); any
        other error fails this delivery's attempt (retried on the schedule, then dead-lettered),
        never the notifier."""
        try:
            await self._process_claimed(rec)
        except (StoreUnavailable, *REDIS_ERRORS):
            raise
        except Exception as exc:
            log.exception("webhook %s failed unexpectedly; counted as a failed attempt", rec.id)
            await self._fail_attempt(rec, f"unexpected error: {exc!r}")

    async def _fail_attempt(self, rec: DeliveryRecord, error: str) -> None:
        attempts = rec.attempts + 1
        delay_s = next_delay_s(self._schedule_s, attempts, self._jitter(), None)
        if delay_s is None:
            result = DeliveryResult(rec.subscription_id, "", rec.action["action_id"], rec.id, Outcome.FAILED,
                                    attempts, status=rec.last_status, error=error)
            await self._dead_letter(rec, result)
            return
        await self._store.reschedule(rec.id, next_ms=self._store.now_ms() + int(delay_s * 1000), attempts=attempts,
                                     last_status=rec.last_status, last_error=error)

    async def _process_claimed(self, rec: DeliveryRecord) -> None:
        """The checks that send nothing, then an attempt within the endpoint's cap."""
        sub = await self._subscriptions.get(rec.subscription_id)
        if sub is None:
            await self._dead_letter(rec, _unsent(rec, "the subscription no longer exists"))
            return
        if rec.action["type"] == ACTION_DIGEST and not is_frozen(rec.action):
            # first thing once due, even if it is not sent now: its record then holds the alerts for good
            frozen = await self._freeze_digest(rec, sub)
            if frozen is None:
                return
            rec = frozen
        if not sub.enabled:
            reason = f"the subscription is disabled ({sub.disabled_reason or 'no reason given'})"
            await self._dead_letter(rec, _unsent(rec, reason, url=sub.url), sub.format)
            return
        if await self._ledger.seen(rec.action["action_id"], sub.id):  # sent before a crash, ledger marked
            await self._store.mark_delivered(rec.id, attempts=rec.attempts, last_status=rec.last_status)
            return
        if await self._folded(rec, sub):
            return
        await self._send_within_cap(rec, sub)

    async def _send_within_cap(self, rec: DeliveryRecord, sub: Subscription) -> None:
        """At most `per_endpoint` attempts to one subscription at once. If the endpoint answers fast,
        as many more deliveries may wait here for a slot (a few fast attempts: well within their
        claim); otherwise, or beyond that, a delivery is deferred — so a slow endpoint holds at most
        `per_endpoint` of this notifier's `concurrency`."""
        slots = self._slots.get(sub.id)
        if slots is None:
            slots = self._slots[sub.id] = asyncio.Semaphore(self._per_endpoint)
        recent_ms = self._attempt_ms.get(sub.id, 0.0)
        may_wait = self._waiting[sub.id] < self._per_endpoint and recent_ms <= WAIT_FOR_SLOT_MAX_MS
        if slots.locked() and not may_wait:  # no await between this check and taking a place below
            wait_ms = min(max(recent_ms or 100.0, BUSY_DEFER_MIN_MS), BUSY_DEFER_MAX_MS)
            await self._defer(rec, int(wait_ms), "endpoint_busy",
                              f"held back: {self._per_endpoint} deliveries to this endpoint in flight")
            return
        self._waiting[sub.id] += 1
        try:
            await slots.acquire()
        finally:
            self._waiting[sub.id] -= 1
        try:
            if sub.rate_limit_per_minute and await self._rate_limited(rec, sub):
                return
            now_ms = self._store.now_ms()
            wait_ms = await self._health.gate(sub.id, now_ms)
            if wait_ms:  # until the circuit lets a probe through; released at once when it closes
                self._metrics.deferred.labels(reason="circuit_open").inc()
                await self._store.hold(rec.id, sub.id, until_ms=now_ms + wait_ms,
                                       last_error="held back: the endpoint's circuit is open")
                return
            await self._attempt(rec, sub)
        finally:
            slots.release()

    async def _attempt(self, rec: DeliveryRecord, sub: Subscription) -> None:
        action = rec.action
        started = self._monotonic()
        got = await self._sender.attempt(sub, action)
        self._note_duration(sub.id, (self._monotonic() - started) * 1000)
        attempts = rec.attempts + (1 if got.sent else 0)
        result = DeliveryResult(sub.id, sub.url, action["action_id"], rec.id, got.outcome, attempts,
                                status=got.status, error=got.error)
        if got.outcome is Outcome.DELIVERED:
            await self._ledger.mark(action["action_id"], sub.id)
            await self._store.mark_delivered(rec.id, attempts=attempts, last_status=got.status)
            if await self._health.record_success(sub.id, self._store.now_ms()):
                released = await self._store.release_held(sub.id, self._store.now_ms())
                log.info("endpoint %s of subscription %s answers again: circuit closed, %d held deliveries released",
                         redact_url(sub.url), sub.id, released)
            self._sender.finish(action, result, sub.format)
            return
        if got.sent and got.status not in NOT_A_BREAKER_FAILURE:
            await self._record_failure(sub, got)
        delay_s = next_delay_s(self._schedule_s, attempts, self._jitter(), got.retry_after_s) if got.retriable else None
        if delay_s is None:
            await self._dead_letter(rec, result, sub.format)
            return
        self._metrics.retries.inc()
        next_ms = self._store.now_ms() + int(delay_s * 1000)
        await self._store.reschedule(rec.id, next_ms=next_ms, attempts=attempts, last_status=got.status,
                                     last_error=got.error)
        log.info("webhook %s attempt %d to %s failed (%s); next in %.1fs",
                 rec.id, attempts, redact_url(sub.url), got.error, delay_s)

    def _note_duration(self, sub_id: str, ms: float) -> None:
        previous = self._attempt_ms.get(sub_id)
        self._attempt_ms[sub_id] = ms if previous is None else previous + ATTEMPT_EWMA_WEIGHT * (ms - previous)

    async def _record_failure(self, sub: Subscription, got: AttemptOutcome) -> None:
        verdict = await self._health.record_failure(sub.id, self._store.now_ms(), status=got.status, error=got.error)
        if verdict.opened:
            self._metrics.circuit_opened.inc()
            log.warning("endpoint %s of subscription %s failed %d times in a row (%s): circuit open until %s",
                        redact_url(sub.url), sub.id, verdict.failures, got.error, verdict.open_until_ms)
        if verdict.disable and sub.enabled:
            hours = self._health.config.disable_after_s / 3600
            reason = f"failing for {hours:g} h without a successful delivery (last: {got.error})"
            if await self._subscriptions.disable(sub.id, reason=reason):
                self._metrics.endpoints_disabled.inc()
                log.error("subscription %s disabled: endpoint %s %s; re-enable it with PATCH "
                          "/v1/subscriptions/%s {\"enabled\": true}", sub.id, redact_url(sub.url), reason, sub.id)

    async def _folded(self, rec: DeliveryRecord, sub: Subscription) -> bool:
        """Over the rep's storm limit: the alert goes into its window's digest instead."""
        action = rec.action
        if sub.digest is None or action.get("test") or action["type"] not in ACTION_TYPES:
            return False
        digest_delivery = await self._digests.fold(sub.id, sub.digest, action, self._store.now_ms(),
                                                   lambda digest_id: webhook_id(digest_id, sub.id))
        if digest_delivery is None:
            return False
        await self._store.mark_digested(rec.id, digest_id=digest_delivery)
        self._metrics.digested.labels(format=sub.format).inc()
        return True

    async def _freeze_digest(self, rec: DeliveryRecord, sub: Subscription) -> DeliveryRecord | None:
        """Fix a due digest's content in its record (every retry sends the same); None: not to send."""
        digest = await self._digests.freeze(rec.action, rec.id)  # type: ignore[arg-type]
        if not digest["total"]:  # its window's items expired unsent: nothing to say
            await self._dead_letter(rec, _unsent(rec, "the digest's alerts expired", url=sub.url), sub.format)
            return None
        frozen = await self._store.replace_action(rec.id, digest)  # type: ignore[arg-type]
        if frozen is not None:
            await self._digests.forget_items(digest["action_id"], rec.id)
        return frozen

    async def _rate_limited(self, rec: DeliveryRecord, sub: Subscription) -> bool:
        """Over the subscription's per-minute limit: wait for the next minute (not an attempt)."""
        assert sub.rate_limit_per_minute is not None
        now_ms = self._store.now_ms()
        wait_ms = await self._store.take_rate_slot(sub.id, sub.rate_limit_per_minute, now_ms)
        if not wait_ms:
            return False
        await self._defer(rec, wait_ms, "rate_limit", "held back by rate_limit_per_minute", now_ms=now_ms)
        return True

    async def _defer(
        self, rec: DeliveryRecord, wait_ms: int, reason: str, note: str, now_ms: int | None = None
    ) -> None:
        """Due again `wait_ms` after `now_ms` (default: now), without spending an attempt."""
        self._metrics.deferred.labels(reason=reason).inc()
        start_ms = self._store.now_ms() if now_ms is None else now_ms
        await self._store.reschedule(rec.id, next_ms=start_ms + wait_ms, attempts=rec.attempts,
                                     last_status=rec.last_status, last_error=note)

    async def _dead_letter(self, rec: DeliveryRecord, result: DeliveryResult, format_name: str = "unknown") -> None:
        await self._store.mark_failed(rec.id, attempts=result.attempts, last_status=result.status,
                                      last_error=result.error)
        self._sender.finish(rec.action, result, format_name)
        _log_undelivered(rec.action, result)


def _unsent(rec: DeliveryRecord, error: str, url: str = "") -> DeliveryResult:
    """The result of a delivery given up without an attempt."""
    return DeliveryResult(rec.subscription_id, url, rec.action["action_id"], rec.id, Outcome.FAILED,
                          rec.attempts, status=rec.last_status, error=error)


def _reap(inflight: set[asyncio.Task[None]]) -> None:
    """Forget finished tasks; re-raise the first error among them."""
    done = {task for task in inflight if task.done()}
    inflight.difference_update(done)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _wait_any(events: tuple[asyncio.Event, ...], inflight: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Until one of `events` is set, a delivery finishes, or `timeout_s` passed."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait({*waiters, *inflight}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _log_undelivered(action: Action, result: DeliveryResult) -> None:
    log.error(
        "webhook %s dead-lettered: action=%s type=%s customer=%s subscription=%s destination=%s "
        "outcome=%s attempts=%d last_status=%s error=%s",
        result.webhook_id, result.action_id, action["type"], action.get("customer_id"),
        result.subscription_id, redact_url(result.url), result.outcome.value, result.attempts,
        result.status, result.error,
    )
