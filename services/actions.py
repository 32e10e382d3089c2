"""The action record: what the scorer publishes on the actions topic and the notifier delivers.

One record per state change of a customer (not per event). `action_id` is deterministic, so a
record the scorer publishes twice (after a crash between publishing and committing) carries the
same id both times and receivers can de-duplicate. Documented in docs/events.md.
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

from services.errors import BadRecord
from services.names import ACTION_DIGEST, ACTION_TYPES


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
    lifecycle: NotRequired[str]  # the lifecycle state after the change: normal | throttled | cooling_off | to_activate
    pause_until: NotRequired[str]  # throttle: when it ends if nobody touches the customer (RFC 3339)
    escalation: NotRequired[list[str]]  # a throttle update: what started to hold (complaint, frequency_cap, ...)
    best_channel: NotRequired[str]  # re_engage: the open channel the customer answers on most
    best_time: NotRequired[dict[str, str]]  # re_engage: {"local": "Thu 15:00", "timezone": "Asia/Shanghai"}
    test: NotRequired[bool]  # true on a sample sent by POST /v1/subscriptions/{id}/test
    subscription_id: NotRequired[str]  # deliver to this subscription only (test deliveries)


class DigestItem(TypedDict):
    """One alert folded into a digest: enough for the rep to act on it without the full action."""

    action_id: str
    type: str  # one of names.ACTION_TYPES
    customer_id: str
    at: str
    suggestion: str
    reasons: list[Reason]
    pause_until: NotRequired[str]


class Digest(TypedDict):
    """One rep's alerts beyond a subscription's storm limit in one window, sent as one message.

    Made by the notifier (never published on the actions topic); delivered like an action, with
    `type` = names.ACTION_DIGEST and a stable `action_id` per (subscription, rep, window).
    """

    v: int
    action_id: str
    type: str  # names.ACTION_DIGEST
    at: str  # RFC 3339, UTC: the end of the window
    owner_rep_id: str | None
    window_start: str
    window_end: str
    total: int  # alerts folded in
    by_type: dict[str, int]  # alerts per action type
    items: list[DigestItem]  # the first DIGEST_ITEMS_MAX, oldest first
    omitted: int  # total - len(items)


DIGEST_ITEMS_MAX = 50


def encode_action(action: Action) -> bytes:
    return json.dumps(action, separators=(",", ":"), ensure_ascii=False).encode()


def decode_action(raw: bytes) -> Action:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"action record is not JSON: {exc}") from exc
    if not isinstance(data, dict) or "action_id" not in data or not _known_type(data):
        raise BadRecord(f"action record lacks a known type or an action_id: {str(data)[:200]}")
    return data  # type: ignore[return-value]


def _known_type(data: dict[str, Any]) -> bool:
    """An action type; or a digest, which is on the topic only as a sample (POST …/test, `test: true`)."""
    return data.get("type") in ACTION_TYPES or (data.get("type") == ACTION_DIGEST and data.get("test") is True)


def webhook_body(action: Action) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return {"type": action["type"], "timestamp": action["at"], "data": action}
