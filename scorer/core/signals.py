"""Fatigue conditions: each rule decides from the state whether it holds now, and why.

A customer is throttled while at least one condition holds. Each rule has its own hysteresis
(`was_active`) so the status does not flap around a threshold:

    frequency_cap            counted touches in the window above the cap (recover at or below)
    complaint                a complaint / spam report within the cool-off period
    unanswered_streak        N touches in a row since the last response of any kind
    reply_latency_slowdown   recent replies' median latency >= factor x the customer's baseline
    response_rate_drop       response rate of the latest settled touches far below the baseline
    engagement_drop          open/click rate of the latest settled touches below the baseline

The last four are response-bound: after a rest (or the silence period) ended a throttle they hold
again only on new evidence — touches, replies, settled touches after `state.fresh_start_ms` — so
that the customer is not judged twice for the fatigue they already rested off.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from scorer.core.state import CustomerState, TouchRecord
from services.actions import Reason
from services.contract import ResponseKind
from services.policy.model import Policy, RateDrop

RESPONSE_BITS = {kind.value: 1 << i for i, kind in enumerate(ResponseKind)}
UNKNOWN_KIND_BIT = 1 << len(RESPONSE_BITS)
ANY_RESPONSE = (UNKNOWN_KIND_BIT << 1) - 1


def response_bit(kind: str | None) -> int:
    """The bit a response of this kind sets on the touch it answers (responses without a kind too)."""
    return RESPONSE_BITS.get(kind or "", UNKNOWN_KIND_BIT)

# The order reasons are listed in an action.
RULES = (
    "frequency_cap",
    "complaint",
    "unanswered_streak",
    "reply_latency_slowdown",
    "response_rate_drop",
    "engagement_drop",
)


def mask_of(kinds: frozenset[str] | None) -> int:
    return ANY_RESPONSE if kinds is None else sum(RESPONSE_BITS[k] for k in kinds)


def counted_touches_in_window(state: CustomerState, now_ms: int, policy: Policy) -> int:
    return state.counts.count(
        policy.frequency_window.ms, now_ms, type_="touch", exclude_kinds=policy.uncounted_kinds
    )


def frequency_cap(state: CustomerState, now_ms: int, policy: Policy, was_active: bool) -> Reason | None:
    touches = counted_touches_in_window(state, now_ms, policy)
    limit = policy.recover_at_or_below if was_active else policy.throttle_above
    if touches > limit:
        return Reason(rule="frequency_cap", window=policy.frequency_window.label, observed=touches,
                      threshold=policy.throttle_above)
    return None


def complaint(state: CustomerState, now_ms: int, policy: Policy, was_active: bool) -> Reason | None:
    signals = policy.signals
    if not signals.complaint_enabled:
        return None
    recent = [t for t in state.complaints_ms if t > now_ms - signals.complaint_cool_off.ms]
    if not recent:
        return None
    return Reason(rule="complaint", window=signals.complaint_cool_off.label, observed=len(recent), threshold=0)


def complaint_ends_ms(state: CustomerState, policy: Policy) -> int | None:
    if not state.complaints_ms or not policy.signals.complaint_enabled:
        return None
    return max(state.complaints_ms) + policy.signals.complaint_cool_off.ms


def _fresh(state: CustomerState) -> int:
    return state.fresh_start_ms if state.fresh_start_ms is not None else -1


def streak_length(state: CustomerState, policy: Policy) -> int:
    """Counted touches since the customer's last response of any kind (and since a rest)."""
    since = state.last_response_ms if state.last_response_ms is not None else -1
    if state.fresh_start_ms is not None and state.fresh_start_ms > since:
        since = state.fresh_start_ms
    uncounted = policy.uncounted_kinds
    return sum(1 for t in state.recent_touches if t[0] > since and t[3] not in uncounted)


def unanswered_streak(state: CustomerState, now_ms: int, policy: Policy, was_active: bool) -> Reason | None:
    signals = policy.signals
    if not signals.streak_enabled:
        return None
    streak = streak_length(state, policy)
    if streak >= signals.streak_touches:
        return Reason(rule="unanswered_streak", window="since_last_response", observed=streak,
                      threshold=signals.streak_touches)
    return None


def latency_ratio(state: CustomerState, now_ms: int, policy: Policy) -> tuple[float, float, float] | None:
    """(recent median, baseline median, ratio) of reply latency, or None without enough samples."""
    s = policy.signals
    samples = state.latency_samples
    if len(samples) <= s.latency_recent:
        return None
    recent = samples[-s.latency_recent :]
    baseline = [lat for ts, lat in samples[: -s.latency_recent] if ts > now_ms - s.latency_baseline.ms]
    if len(baseline) < s.latency_min_baseline_samples:
        return None
    recent_median = statistics.median(lat for _, lat in recent)
    baseline_median = statistics.median(baseline)
    ratio = recent_median / max(baseline_median, 1)
    return recent_median, baseline_median, ratio


def reply_latency_slowdown(state: CustomerState, now_ms: int, policy: Policy, was_active: bool) -> Reason | None:
    s = policy.signals
    if not s.latency_enabled:
        return None
    found = latency_ratio(state, now_ms, policy)
    if found is None or state.latency_samples[-1][0] <= _fresh(state):
        return None
    recent_ms, baseline_ms, ratio = found
    limit = s.latency_recover_factor if was_active else s.latency_slowdown_factor
    if ratio < limit:
        return None
    return Reason(
        rule="reply_latency_slowdown",
        window=f"last {s.latency_recent} replies vs {s.latency_baseline.label}",
        observed=round(ratio, 2),
        threshold=s.latency_slowdown_factor,
        detail=f"median reply {recent_ms / 3_600_000:.1f} h vs usual {baseline_ms / 3_600_000:.1f} h",
    )


def rate_drop(
    state: CustomerState, now_ms: int, policy: Policy, setting: RateDrop, *, fresh_only: bool = False
) -> tuple[float, float] | None:
    """(recent rate, baseline rate) over settled counted touches, or None without enough touches
    (`fresh_only`: or when the recent ones are not all after the last rest).

    A touch is settled once the customer's event time (the newest event seen, never ahead of
    `now`) is `settle` past it: its responses have had time to arrive — also when a history is
    imported in one go.
    """
    reference = min(now_ms, state.watermark_ms if state.watermark_ms is not None else now_ms)
    settled_by, uncounted = reference - setting.settle_ms, policy.uncounted_kinds
    settled = [t for t in state.recent_touches if t[0] <= settled_by and t[3] not in uncounted]
    if len(settled) < setting.recent_touches + setting.min_baseline_touches:
        return None
    mask = mask_of(setting.kinds)
    recent, baseline = settled[-setting.recent_touches :], settled[: -setting.recent_touches]
    if fresh_only and recent[0][0] <= _fresh(state):
        return None

    def rate(touches: list[TouchRecord]) -> float:
        return sum(1 for t in touches if t[4] & mask) / len(touches)

    return rate(recent), rate(baseline)


def _rate_rule(name: str, pick: Callable[[Policy], RateDrop]) -> Callable[..., Reason | None]:
    def rule(state: CustomerState, now_ms: int, policy: Policy, was_active: bool) -> Reason | None:
        setting = pick(policy)
        if not setting.enabled:
            return None
        found = rate_drop(state, now_ms, policy, setting, fresh_only=True)
        if found is None:
            return None
        recent, baseline = found
        threshold = baseline * (1 - setting.drop)
        if baseline <= 0 or recent > threshold:
            return None
        return Reason(
            rule=name,
            window=f"last {setting.recent_touches} touches",
            observed=round(recent, 3),
            threshold=round(threshold, 3),
            detail=f"rate {recent:.0%} vs usual {baseline:.0%}",
        )

    return rule


response_rate_drop = _rate_rule("response_rate_drop", lambda p: p.signals.response_rate)
engagement_drop = _rate_rule("engagement_drop", lambda p: p.signals.engagement)

CONDITIONS: dict[str, Callable[[CustomerState, int, Policy, bool], Reason | None]] = {
    "frequency_cap": frequency_cap,
    "complaint": complaint,
    "unanswered_streak": unanswered_streak,
    "reply_latency_slowdown": reply_latency_slowdown,
    "response_rate_drop": response_rate_drop,
    "engagement_drop": engagement_drop,
}


def active_conditions(state: CustomerState, now_ms: int, policy: Policy) -> list[Reason]:
    """Every condition that holds now, in RULES order."""
    active = set(state.active_rules)
    found = []
    for name in RULES:
        reason = CONDITIONS[name](state, now_ms, policy, name in active)
        if reason is not None:
            found.append(reason)
    return found
