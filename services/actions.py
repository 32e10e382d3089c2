"""The action record: what the scorer publishes on the actions topic and the notifier delivers.

One record per state change of a customer (not per event). `action_id` is deterministic, so a
record the scorer publishes twice (after a crash between publishing and committing) carries the
same id both times and receivers can de-duplicate. Documented in docs/events.md.
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

from services.errors import BadRecord
from services.names import ACTION_TYPES


class Reason(TypedDict):
    rule: str  # e.g. "frequency_cap", "frequency_recovered", "cadence_overdue"
    window: str  # e.g. "30d"
    observed: float
    threshold: float
    detail: NotRequired[str]


class Action(TypedDict):
    v: int
    action_id: str
    type: str  # one of names.ACTION_TYPES
    customer_id: str
    at: str  # RFC 3339, UTC: when the state changed
    status: str  # status after the change: normal | throttled | dormant
    previous_status: str
    reasons: list[Reason]
    suggestion: str
    owner_rep_id: str | None
    profile: dict[str, Any] | None
    counts: dict[str, Any]  # touches/responses per window at the moment of the change
    test: NotRequired[bool]  # true on a sample sent by POST /v1/subscriptions/{id}/test
    subscription_id: NotRequired[str]  # deliver to this subscription only (test deliveries)


def encode_action(action: Action) -> bytes:
    return json.dumps(action, separators=(",", ":"), ensure_ascii=False).encode()


def decode_action(raw: bytes) -> Action:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"action record is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") not in ACTION_TYPES or "action_id" not in data:
        raise BadRecord(f"action record lacks a known type or an action_id: {str(data)[:200]}")
    return data  # type: ignore[return-value]


def webhook_body(action: Action) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return {"type": action["type"], "timestamp": action["at"], "data": action}
