"""One action record to a durable delivery per matching subscription (not yet sent).

An action carrying `subscription_id` (a test delivery from POST /v1/subscriptions/{id}/test) goes
to that subscription only; with `test: true` its events and filters are not applied.

`dispatch` returns once the deliveries are stored (services/delivery/store.py): only then may the
record's offset be committed. The scheduler (notifier/scheduler.py) sends them. A pair already in
the delivery ledger, or already scheduled, is skipped as a duplicate. A record that cannot be
decoded is counted and skipped. Store errors propagate (StoreUnavailable): the record is then not
committed and is read again after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import urlsplit

from notifier.ledger import DeliveryLedger
from notifier.signing import webhook_id
from services.actions import Action, decode_action
from services.delivery.store import DeliveryRecord
from services.delivery.subscriptions import Subscription
from services.errors import StoreUnavailable
from services.metrics import NotifierMetrics
from services.redisio import REDIS_ERRORS

log = logging.getLogger(__name__)


class DeliveryQueue(Protocol):
    async def schedule(self, records: Iterable[DeliveryRecord]) -> list[str]:
        """Store pending deliveries durably; return the ids new (existing ids are left alone).
        Raises StoreUnavailable."""
        ...


class SubscriptionSource(Protocol):
    async def matching(self, event_type: str) -> list[Subscription]:
        """Subscriptions that want `event_type`. May raise redis errors."""
        ...

    async def get(self, sub_id: str) -> Subscription | None:
        """One subscription, None when there is none. May raise redis errors."""
        ...


def redact_url(url: str) -> str:
    """scheme://host[:port] only: paths and queries of webhook URLs often carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Dispatcher:
    def __init__(
        self,
        subscriptions: SubscriptionSource,
        ledger: DeliveryLedger,
        queue: DeliveryQueue,
        metrics: NotifierMetrics,
        clock: Callable[[], float] = time.time,
        on_scheduled: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_scheduled = on_scheduled
        self._subscriptions = subscriptions
        self._ledger = ledger
        self._queue = queue
        self._metrics = metrics
        self._clock = clock

    async def dispatch(self, raw: bytes | None, origin: str = "") -> list[str]:
        """Schedule one record's deliveries; return the ids newly scheduled (duplicates skipped)."""
        action = decode_action(raw or b"")  # BadRecord: the consumer dead-letters the record
        now_ms = int(self._clock() * 1000)
        subs = [sub for sub in await self._recipients(action) if not await self._already_delivered(action, sub)]
        records = [DeliveryRecord.new(webhook_id(action["action_id"], sub.id), action, sub.id, now_ms) for sub in subs]
        scheduled = await self._queue.schedule(records)
        new = set(scheduled)
        for sub, rec in zip(subs, records, strict=True):
            if rec.id not in new:
                self._metrics.deliveries.labels(outcome="duplicate", format=sub.format).inc()
        if scheduled:
            self._on_scheduled()  # the scheduler sends them at once instead of at its next poll
        return scheduled

    async def _already_delivered(self, action: Action, sub: Subscription) -> bool:
        if await self._ledger.seen(action["action_id"], sub.id):
            self._metrics.deliveries.labels(outcome="duplicate", format=sub.format).inc()
            log.info("action %s already delivered to %s; skipped", action["action_id"], sub.id)
            return True
        return False

    async def _recipients(self, action: Action) -> list[Subscription]:
        try:
            if "subscription_id" not in action:
                matching = await self._subscriptions.matching(action["type"])
                return [sub for sub in matching if sub.filters.matches(action)]
            sub = await self._subscriptions.get(action["subscription_id"])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot read webhook subscriptions: {exc}") from exc
        if sub is None:
            log.info("action %s is for subscription %s, which is gone; skipped",
                     action["action_id"], action["subscription_id"])
            return []
        return [sub] if action.get("test") or sub.wants_action(action) else []
