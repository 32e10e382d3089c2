"""Shared test data for the notifier tests: actions and subscriptions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from services.actions import DIGEST_ITEMS_MAX, Action, Digest, DigestItem
from services.delivery.subscriptions import Subscription, generate_secret
from services.names import ACTION_DIGEST, ACTION_THROTTLE

PUBLIC_ADDRESS = "93.184.216.34"


def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC_ADDRESS]


def make_action(action_id: str | None = None, *, type_: str = ACTION_THROTTLE, customer_id: str = "cust-1") -> Action:
    return Action(
        v=1,
        action_id=action_id or f"act_{uuid.uuid4().hex}",
        type=type_,
        customer_id=customer_id,
        at=datetime.now(UTC).isoformat(),
        status="throttled",
        previous_status="normal",
        reasons=[{"rule": "frequency_cap", "window": "7d", "observed": 6.0, "threshold": 5.0}],
        suggestion="pause outreach for 3 days",
        owner_rep_id="rep-9",
        profile=None,
        counts={"7d": {"touches": 6, "responses": 0}},
    )


def make_subscription(sub_id: str = "sub_a", url: str = "https://hooks.example.com/in") -> Subscription:
    return Subscription(id=sub_id, url=url, events=[ACTION_THROTTLE], secret=generate_secret())


DIGEST_WINDOW = ("2026-11-23T20:00:00Z", "2026-11-23T20:10:00Z")


def make_digest(
    counts: Mapping[str, int] | None = None, *, owner_rep_id: str | None = "rep-9", action_id: str = "dig_test",
) -> Digest:
    """A frozen digest of `counts` alerts per type (default 12 throttles), in that order, oldest first.

    Customers are cust-1, cust-2, …; throttle items carry a `pause_until`. Like the notifier, it lists
    the first DIGEST_ITEMS_MAX items and counts the rest in `omitted`.
    """
    counts = dict(counts or {ACTION_THROTTLE: 12})
    start = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    items: list[DigestItem] = []
    for type_, count in counts.items():
        for _ in range(count):
            n = len(items) + 1
            item = DigestItem(action_id=f"act_{n:04d}", type=type_, customer_id=f"cust-{n}",
                              at=(start + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
                              suggestion="pause outreach for 3 days",
                              reasons=[{"rule": "frequency_cap", "window": "7d", "observed": 6.0, "threshold": 5.0}])
            if type_ == ACTION_THROTTLE:
                item["pause_until"] = "2026-11-26T20:00:00Z"
            items.append(item)
    kept = items[:DIGEST_ITEMS_MAX]
    return Digest(v=1, action_id=action_id, type=ACTION_DIGEST, at=DIGEST_WINDOW[1], owner_rep_id=owner_rep_id,
                  window_start=DIGEST_WINDOW[0], window_end=DIGEST_WINDOW[1], total=len(items),
                  by_type={type_: count for type_, count in counts.items() if count}, items=kept,
                  omitted=len(items) - len(kept))
