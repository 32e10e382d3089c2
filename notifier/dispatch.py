"""One action record to every matching subscription: decode, skip already delivered, send concurrently.

An action carrying `subscription_id` (a test delivery from POST /v1/subscriptions/{id}/test) goes
to that subscription only; with `test: true` its events and filters are not applied.

Deliveries of one action run side by side, so a slow or failing endpoint does not delay the others.
A record that cannot be decoded is counted and skipped. Store errors propagate (StoreUnavailable):
the record is then not committed and is read again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from notifier.delivery import DeliveryResult, Outcome
from notifier.ledger import DeliveryLedger
from services.actions import Action, decode_action
from services.errors import BadRecord, StoreUnavailable
from services.metrics import NotifierMetrics
from services.subscriptions import Subscription

log = logging.getLogger(__name__)


class SubscriptionSource(Protocol):
    async def matching(self, event_type: str) -> list[Subscription]:
        """Subscriptions that want `event_type`. May raise redis errors."""
        ...

    async def get(self, sub_id: str) -> Subscription | None:
        """One subscription, None when there is none. May raise redis errors."""
        ...


class Sender(Protocol):
    async def deliver(self, sub: Subscription, action: Action) -> DeliveryResult:
        """Deliver with retries; never raises for a failed delivery."""
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
        sender: Sender,
        metrics: NotifierMetrics,
    ) -> None:
        self._subscriptions = subscriptions
        self._ledger = ledger
        self._sender = sender
        self._metrics = metrics

    async def dispatch(self, raw: bytes | None, origin: str = "") -> list[DeliveryResult]:
        """Deliver one record; return the results of the deliveries attempted (duplicates skipped)."""
        try:
            action = decode_action(raw or b"")
        except BadRecord as exc:
            self._metrics.bad_records.inc()
            log.warning("skipping undecodable action record %s: %s", origin, exc)
            return []
        subs = await self._recipients(action)
        outcomes = await asyncio.gather(*(self._deliver_once(sub, action) for sub in subs),
                                        return_exceptions=True)
        errors = [item for item in outcomes if isinstance(item, BaseException)]
        if errors:
            raise errors[0]
        return [item for item in outcomes if isinstance(item, DeliveryResult)]

    async def _recipients(self, action: Action) -> list[Subscription]:
        try:
            if "subscription_id" not in action:
                matching = await self._subscriptions.matching(action["type"])
                return [sub for sub in matching if sub.filters.matches(action)]
            sub = await self._subscriptions.get(action["subscription_id"])
        except RedisError as exc:
            raise StoreUnavailable(f"cannot read webhook subscriptions: {exc}") from exc
        if sub is None:
            log.info("action %s is for subscription %s, which is gone; skipped",
                     action["action_id"], action["subscription_id"])
            return []
        return [sub] if action.get("test") or sub.wants_action(action) else []

    async def _deliver_once(self, sub: Subscription, action: Action) -> DeliveryResult | None:
        if await self._ledger.seen(action["action_id"], sub.id):
            self._metrics.deliveries.labels(outcome="duplicate").inc()
            log.info("action %s already delivered to %s; skipped", action["action_id"], sub.id)
            return None
        result = await self._sender.deliver(sub, action)
        if result.outcome is Outcome.DELIVERED:
            await self._ledger.mark(action["action_id"], sub.id)
        else:
            _log_undelivered(action, result)
        return result


def _log_undelivered(action: Action, result: DeliveryResult) -> None:
    log.error(
        "webhook %s not delivered: action=%s type=%s customer=%s subscription=%s destination=%s "
        "outcome=%s attempts=%d last_status=%s error=%s",
        result.webhook_id, result.action_id, action["type"], action.get("customer_id"),
        result.subscription_id, redact_url(result.url), result.outcome.value, result.attempts,
        result.status, result.error,
    )
