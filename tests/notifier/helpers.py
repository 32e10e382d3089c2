"""Shared test data for the notifier tests: actions and subscriptions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.actions import Action
from services.names import ACTION_THROTTLE
from services.subscriptions import Subscription, generate_secret

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
