"""The public snapshot of a customer (what GET /v1/customers/{id} returns), built from the state."""

from __future__ import annotations

from typing import Any

from scorer.core.engine import counted_touches, next_due_ms, reply_latency
from scorer.core.state import CustomerState
from scorer.core.timefmt import format_ms, format_optional
from services.policy import Policy


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def snapshot(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, Any]:
    now_ms = max(now_ms, state.clock_ms)
    last_ms, median_ms = reply_latency(state)
    windows = {}
    for window in policy.windows:
        windows[window.label] = {
            plural: {
                "total": state.counts.count(window.ms, now_ms, type_=type_),
                "by_channel": state.counts.breakdown(window.ms, now_ms, type_=type_, by="channel"),
                "by_kind": state.counts.breakdown(window.ms, now_ms, type_=type_, by="kind"),
            }
            for plural, type_ in (("touches", "touch"), ("responses", "response"))
        }
    return {
        "customer_id": state.customer_id,
        "status": state.status,
        "status_since": format_optional(state.status_since_ms),
        "as_of": format_ms(now_ms),
        "profile": state.profile,
        "windows": windows,
        "frequency": {
            "window": policy.frequency_window.label,
            "counted_touches": counted_touches(state, now_ms, policy),
            "throttle_above": policy.throttle_above,
            "recover_at_or_below": policy.recover_at_or_below,
        },
        "reply_latency": {
            "last_s": _seconds(last_ms),
            "median_s": _seconds(median_ms),
            "samples": len(state.latency_samples),
        },
        "first_seen_at": format_optional(state.first_seen_ms),
        "last_touch_at": format_optional(state.last_touch_ms),
        "last_response_at": format_optional(state.last_response_ms),
        "next_check_at": format_optional(next_due_ms(state, policy)),
        "last_action": state.last_action,
        "events_counted": state.events_counted,
    }
