"""The public snapshot of a customer (what GET /v1/customers/{id} returns), built from the state."""

from __future__ import annotations

from typing import Any

from scorer.core import engine, lifecycle, signals
from scorer.core.engine import counted_touches, leave_times, next_due_ms, reply_latency
from scorer.core.state import DUE_UNKNOWN, CustomerState
from scorer.core.timefmt import format_ms, format_optional
from services.durations import DAY_MS
from services.policy.model import Policy


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def _signals(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, Any]:
    """What the response-aware rules see now (docs/api.md)."""
    latency = signals.latency_ratio(state, now_ms, policy)
    rate = signals.rate_drop(state, now_ms, policy, policy.signals.response_rate)
    engagement = signals.rate_drop(state, now_ms, policy, policy.signals.engagement)
    return {
        "active": list(state.active_rules),
        "unanswered_streak": signals.streak_length(state, policy),
        "complaints": len(state.complaints_ms),
        "reply_latency_ratio": None if latency is None else round(latency[2], 2),
        "response_rate": None if rate is None else {"recent": round(rate[0], 3), "baseline": round(rate[1], 3)},
        "engagement_rate": None if engagement is None else {
            "recent": round(engagement[0], 3), "baseline": round(engagement[1], 3)},
    }


WEEK_MS = 7 * DAY_MS
MAX_LEAVES = 50


def _leaves(state: CustomerState, window_ms: int, now_ms: int, policy: Policy) -> list[str]:
    """When the counted touches in the window leave it, earliest first (the decision uses these)."""
    return [format_ms(t) for t in leave_times(state, window_ms, now_ms, policy, limit=MAX_LEAVES)]


def _last_touch_by_channel(state: CustomerState, policy: Policy) -> dict[str, str]:
    latest: dict[str, int] = {}
    for ts, channel, _, kind, _ in state.recent_touches:
        if kind not in policy.uncounted_kinds:
            latest[channel] = max(ts, latest.get(channel, ts))
    return {channel: format_ms(ts) for channel, ts in sorted(latest.items())}


def _last_response_by_channel(state: CustomerState) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, ts in sorted(state.last_responses.items()):
        channel, _, kind = key.partition("|")
        out.setdefault(channel, {})[kind] = format_ms(ts)
    return out


def _lifecycle(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, Any]:
    """Where the customer is in the lifecycle, why, until when, and what to do next (docs/api.md)."""
    phase = state.phase
    entry = lifecycle.list_entry(state)
    reasons: list[Any] = []
    until: int | None = None
    ends_on_response = False
    if phase in (lifecycle.THROTTLED, lifecycle.COOLING_OFF):
        reasons = signals.active_conditions(state, now_ms, policy)
        until = engine.throttle_until_ms(state, now_ms, policy, reasons)
        ends_on_response = until is None
    elif phase == lifecycle.TO_ACTIVATE:
        reasons = list(engine.to_activate_reasons(state, now_ms, policy))
    channel, when = engine.next_step(state, now_ms, policy)
    return {
        "state": phase,
        "list": None if entry is None else entry[0],
        "since": format_optional(state.phase_since_ms),
        "reasons": reasons,
        "dormant_for": list(state.dormant_for) if phase == lifecycle.TO_ACTIVATE else [],
        "overdue_since": format_optional(state.overdue_since_ms) if phase == lifecycle.TO_ACTIVATE else None,
        "until": format_optional(until),
        "ends_on_response": ends_on_response,
        "next_step": {
            "channel": channel,
            "best_time": None if when is None else {"local": when[0], "timezone": when[1]},
        },
    }


def _campaigns(state: CustomerState) -> dict[str, dict[str, Any]]:
    return {c: {"at": format_ms(ts), "rep_id": rep, "channel": channel}
            for c, (ts, rep, channel) in sorted(state.campaigns.items())}


_GROUPS = (("touches", "touch"), ("responses", "response"))


def _sorted(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items())) if len(counts) > 1 else counts


def _window_table(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, Any]:
    """Touches and responses per window: in total, by channel and by kind (zeros left out), from one
    pass over each series' counts in every window (`WindowCounts.table`)."""
    ordered = sorted(policy.windows, key=lambda w: w.ms)
    n = len(ordered)
    table = state.counts.table(tuple(w.ms for w in ordered), now_ms)
    sums: dict[str, tuple[list[int], list[dict[str, int]], list[dict[str, int]]]] = {
        type_: ([0] * n, [{} for _ in range(n)], [{} for _ in range(n)]) for _, type_ in _GROUPS}
    for key, per_window in table.items():
        found = sums.get(key.type)
        if found is None:
            continue
        totals, by_channel, by_kind = found
        channel, kind = key.channel, key.kind
        for i, count in enumerate(per_window):
            if count:
                totals[i] += count
                channels, kinds = by_channel[i], by_kind[i]
                channels[channel] = channels.get(channel, 0) + count
                kinds[kind] = kinds.get(kind, 0) + count
    position = {w.label: i for i, w in enumerate(ordered)}
    windows: dict[str, Any] = {}
    for window in policy.windows:
        i = position[window.label]
        windows[window.label] = {
            plural: {"total": sums[type_][0][i], "by_channel": _sorted(sums[type_][1][i]),
                     "by_kind": _sorted(sums[type_][2][i])}
            for plural, type_ in _GROUPS
        }
    return windows


_UNKNOWN = -1


def _next_check(state: CustomerState, policy: Policy) -> int | None:
    return next_due_ms(state, policy) if state.due_ms == DUE_UNKNOWN else state.due_ms


def snapshot(state: CustomerState, now_ms: int, policy: Policy, *, next_due: int | None = _UNKNOWN) -> dict[str, Any]:
    """The public view of a customer at `now_ms` (docs/api.md), computed at read time from the state.
    `next_due`: the moment (event time) the customer's timeline is evaluated next without an event,
    when the caller has it; else the state's own (`timers.next_firing_ms`, kept as `due_ms`)."""
    policy = policy.for_profile(state.profile)
    now_ms = max(now_ms, state.clock_ms)
    last_ms, median_ms = reply_latency(state)
    windows = _window_table(state, now_ms, policy)
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
            "warn_above": policy.warn_above,
            "throttle_above": policy.throttle_above,
            "recover_at_or_below": policy.recover_at_or_below,
            "leaves_at": _leaves(state, policy.frequency_window.ms, now_ms, policy),
        },
        "weekly": {
            "window": "7d",
            "counted_touches": state.counts.count(WEEK_MS, now_ms, type_="touch", exclude_kinds=policy.uncounted_kinds),
            "leaves_at": _leaves(state, WEEK_MS, now_ms, policy),
        },
        "last_touch_by_channel": _last_touch_by_channel(state, policy),
        "last_response_by_channel": _last_response_by_channel(state),
        "reply_latency": {
            "last_s": _seconds(last_ms),
            "median_s": _seconds(median_ms),
            "samples": len(state.latency_samples),
        },
        "signals": _signals(state, now_ms, policy),
        "closed_channels": {channel: format_ms(ts) for channel, ts in sorted(state.closed_channels.items())},
        "first_seen_at": format_optional(state.first_seen_ms),
        "last_touch_at": format_optional(state.last_touch_ms),
        "last_response_at": format_optional(state.last_response_ms),
        "next_check_at": format_optional(_next_check(state, policy) if next_due == _UNKNOWN else next_due),
        "last_action": state.last_action,
        "events_counted": state.events_counted,
        "lifecycle": _lifecycle(state, now_ms, policy),
        "recent_campaigns": _campaigns(state),
    }


def decision_view(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, Any]:
    """What the pre-send decision reads (services/policy/decision.py `decide`), as of `now_ms`: the parts
    of the snapshot it needs — the profile, the counted touches and when they leave the frequency
    window and the week, the lifecycle state and its known end, the last touches and responses per
    channel, closed channels, recent campaigns — and none of what only `GET /v1/customers/{id}` shows
    (window tables, signals, reply latency, next step: computed at read time from the state). The
    scorer writes it with the state (`decide(decision_view(...))` equals `decide(snapshot(...))`,
    tests/scorer/core/test_views.py)."""
    policy = policy.for_profile(state.profile)
    now_ms = max(now_ms, state.clock_ms)
    until = None
    if state.phase in (lifecycle.THROTTLED, lifecycle.COOLING_OFF):
        until = engine.throttle_until_ms(state, now_ms, policy, signals.active_conditions(state, now_ms, policy))
    last_action = state.last_action or {}
    return {
        "customer_id": state.customer_id,
        "status": state.status,
        "as_of": format_ms(now_ms),
        "profile": state.profile,
        "frequency": {
            "window": policy.frequency_window.label,
            "counted_touches": counted_touches(state, now_ms, policy),
            "leaves_at": _leaves(state, policy.frequency_window.ms, now_ms, policy),
        },
        "weekly": {
            "window": "7d",
            "counted_touches": state.counts.count(WEEK_MS, now_ms, type_="touch", exclude_kinds=policy.uncounted_kinds),
            "leaves_at": _leaves(state, WEEK_MS, now_ms, policy),
        },
        "last_touch_by_channel": _last_touch_by_channel(state, policy),
        "last_response_by_channel": _last_response_by_channel(state),
        "signals": {"active": list(state.active_rules)},
        "closed_channels": {channel: format_ms(ts) for channel, ts in sorted(state.closed_channels.items())},
        "last_action": {k: last_action[k] for k in ("suggestion", "pause_until") if k in last_action},
        "lifecycle": {"state": state.phase, "until": format_optional(until)},
        "recent_campaigns": _campaigns(state),
    }
