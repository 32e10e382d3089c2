"""The fatigue state machine: events, profiles and due timers in; actions out.

    apply_event(state, event, now_ms, policy)  -> Outcome   (counts, latency, throttle/recover)
    apply_profile(state, profile, now_ms, policy) -> list[Action]
    on_due(state, now_ms, policy)              -> list[Action]   (re_engage, recover by expiry)
    next_due_ms(state, policy)                 -> when on_due must run next, or None

Every function mutates `state` in place and never reads a clock. An action is emitted once per
status change (normal -> throttled -> normal, normal -> dormant), never once per event.
"""

from __future__ import annotations

import bisect
import hashlib
import statistics
from dataclasses import dataclass, field
from typing import Any

from scorer.core.state import (
    DORMANT,
    MAX_RECENT_TOUCHES,
    MAX_SEEN_IDS,
    NORMAL,
    THROTTLED,
    ContactEvent,
    CustomerState,
)
from scorer.core.timefmt import format_ms
from scorer.core.windows import SeriesKey, in_window
from services.actions import Action, Reason
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy import Policy

COUNTED = "counted"
DUPLICATE = "duplicate"
LATE = "late"


@dataclass
class Outcome:
    """What happened to one event: `counted`, `duplicate` or `late`, and the actions it caused."""

    result: str
    actions: list[Action] = field(default_factory=list)
    reason: str = ""


def apply_event(state: CustomerState, event: ContactEvent, now_ms: int, policy: Policy) -> Outcome:
    now_ms = _tick_clock(state, now_ms, policy)
    if event.dedup_key in state.seen:
        return Outcome(DUPLICATE, reason=f"event {event.event_id!r} already counted")
    if state.watermark_ms is not None and event.occurred_at_ms < state.watermark_ms - policy.grace_ms:
        return Outcome(LATE, reason="older than the grace period behind the newest event of this customer")
    _record(state, event, now_ms, policy)
    return Outcome(COUNTED, _evaluate_frequency(state, now_ms, policy, trigger=event.dedup_key))


def apply_profile(state: CustomerState, profile: dict[str, Any], now_ms: int, policy: Policy) -> list[Action]:
    now_ms = _tick_clock(state, now_ms, policy)
    state.profile = profile
    if state.first_seen_ms is None:
        state.first_seen_ms = now_ms
    if profile.get("do_not_contact") and state.status == DORMANT:
        _set_status(state, NORMAL, now_ms)  # nobody is to re-engage a do-not-contact customer
    return []


def on_due(state: CustomerState, now_ms: int, policy: Policy) -> list[Action]:
    """Re-evaluate rules that change with time alone: windows expiring, cadence overdue."""
    now_ms = _tick_clock(state, now_ms, policy)
    trigger = f"due:{now_ms}"
    actions = _evaluate_frequency(state, now_ms, policy, trigger)
    due = re_engage_due_ms(state, policy)
    if due is not None and now_ms >= due:
        actions.append(_re_engage(state, now_ms, policy, trigger))
    return actions


def next_due_ms(state: CustomerState, policy: Policy) -> int | None:
    """The next moment `on_due` can change something: a window boundary or the cadence deadline."""
    candidates = [
        state.counts.next_expiry_ms([w.ms for w in policy.windows], state.clock_ms),
        re_engage_due_ms(state, policy),
    ]
    times = [t for t in candidates if t is not None]
    return min(times) if times else None


def re_engage_due_ms(state: CustomerState, policy: Policy) -> int | None:
    profile = state.profile or {}
    if state.status != NORMAL or profile.get("do_not_contact"):
        return None
    reference = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
    if reference is None:
        return None
    return reference + policy.cadence_ms(profile.get("stage"))


def counted_touches(state: CustomerState, now_ms: int, policy: Policy) -> int:
    return state.counts.count(
        policy.frequency_window.ms, now_ms, type_="touch", exclude_kinds=policy.uncounted_kinds
    )


def window_totals(state: CustomerState, now_ms: int, policy: Policy) -> dict[str, dict[str, int]]:
    """Touches (all and counted toward the cap) and responses per window."""
    return {
        w.label: {
            "touches": state.counts.count(w.ms, now_ms, type_="touch"),
            "counted_touches": state.counts.count(
                w.ms, now_ms, type_="touch", exclude_kinds=policy.uncounted_kinds
            ),
            "responses": state.counts.count(w.ms, now_ms, type_="response"),
        }
        for w in policy.windows
    }


def reply_latency(state: CustomerState) -> tuple[int | None, float | None]:
    """(last latency ms, median latency ms) of the kept reply samples."""
    if not state.latency_samples:
        return None, None
    return state.latency_samples[-1][1], statistics.median(s[1] for s in state.latency_samples)


# ---- recording ----


def _tick_clock(state: CustomerState, now_ms: int, policy: Policy) -> int:
    """The state's clock never goes back; windows are advanced to it."""
    state.clock_ms = max(state.clock_ms, now_ms)
    state.counts.advance(state.clock_ms, policy.retention_ms)
    return state.clock_ms


def _record(state: CustomerState, event: ContactEvent, now_ms: int, policy: Policy) -> None:
    ts = event.occurred_at_ms
    state.counts.add(SeriesKey(event.type, event.channel, event.kind or "-"), ts, now_ms)
    state.counts.advance(now_ms, policy.retention_ms)
    state.events_counted += 1
    state.first_seen_ms = ts if state.first_seen_ms is None else min(state.first_seen_ms, ts)
    state.watermark_ms = ts if state.watermark_ms is None else max(state.watermark_ms, ts)
    _remember_id(state, event.dedup_key, ts, policy)
    if event.type == "touch":
        _record_touch(state, event, policy)
    else:
        _record_response(state, event, policy)


def _remember_id(state: CustomerState, key: str, ts: int, policy: Policy) -> None:
    state.seen[key] = ts
    assert state.watermark_ms is not None
    horizon = state.watermark_ms - policy.grace_ms
    if len(state.seen) > MAX_SEEN_IDS or min(state.seen.values()) < horizon:
        kept = sorted(((t, k) for k, t in state.seen.items() if t >= horizon), reverse=True)
        state.seen = {k: t for t, k in kept[:MAX_SEEN_IDS]}


def _record_touch(state: CustomerState, event: ContactEvent, policy: Policy) -> None:
    ts = event.occurred_at_ms
    bisect.insort(state.recent_touches, (ts, event.channel, event.event_id))
    del state.recent_touches[:-MAX_RECENT_TOUCHES]
    if (event.kind or "-") not in policy.uncounted_kinds:
        state.last_touch_ms = ts if state.last_touch_ms is None else max(state.last_touch_ms, ts)
        if state.status == DORMANT and ts + policy.cadence_ms(_stage(state)) > state.clock_ms:
            _set_status(state, NORMAL, state.clock_ms)


def _record_response(state: CustomerState, event: ContactEvent, policy: Policy) -> None:
    ts = event.occurred_at_ms
    state.last_response_ms = ts if state.last_response_ms is None else max(state.last_response_ms, ts)
    if event.kind not in policy.reply_kinds:
        return
    touch_ms = _answered_touch_ms(state, event)
    if touch_ms is None:
        return
    bisect.insort(state.latency_samples, (ts, max(0, ts - touch_ms)))
    del state.latency_samples[: -policy.max_latency_samples]


def _answered_touch_ms(state: CustomerState, event: ContactEvent) -> int | None:
    """The touch a response answers: `in_reply_to`, else the latest earlier touch on its channel."""
    if event.in_reply_to is not None:
        for ts, _, event_id in reversed(state.recent_touches):
            if event_id == event.in_reply_to:
                return ts
    for ts, channel, _ in reversed(state.recent_touches):
        if channel == event.channel and ts <= event.occurred_at_ms:
            return ts
    return None


# ---- rules ----


def _evaluate_frequency(state: CustomerState, now_ms: int, policy: Policy, trigger: str) -> list[Action]:
    touches = counted_touches(state, now_ms, policy)
    window = policy.frequency_window.label
    if state.status != THROTTLED and touches > policy.throttle_above:
        reason = Reason(rule="frequency_cap", window=window, observed=touches, threshold=policy.throttle_above)
        until = pause_until_ms(state, now_ms, policy)
        suggestion = (
            f"Over-contacted: {touches} touches in {window} (cap {policy.throttle_above}). "
            f"Pause non-transactional touches until {format_ms(until)}."
        )
        action = _transition(state, THROTTLED, ACTION_THROTTLE, [reason], suggestion, now_ms, trigger, policy)
        action["pause_until"] = format_ms(until)  # type: ignore[typeddict-unknown-key]
        return [action]
    if state.status == THROTTLED and touches <= policy.recover_at_or_below:
        reason = Reason(
            rule="frequency_recovered", window=window, observed=touches, threshold=policy.recover_at_or_below
        )
        suggestion = f"Back in band: {touches} touches in {window}. Normal cadence may resume."
        return [_transition(state, NORMAL, ACTION_RECOVERED, [reason], suggestion, now_ms, trigger, policy)]
    return []


def _re_engage(state: CustomerState, now_ms: int, policy: Policy, trigger: str) -> Action:
    stage = _stage(state)
    cadence_ms = policy.cadence_ms(stage)
    reference = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
    assert reference is not None
    idle_days = (now_ms - reference) / 86_400_000
    reason = Reason(
        rule="cadence_overdue",
        window="since_last_touch",
        observed=round(idle_days, 2),
        threshold=round(cadence_ms / 86_400_000, 2),
    )
    last = "no touch yet" if state.last_touch_ms is None else f"last touch {idle_days:.0f} days ago"
    suggestion = f"Neglected: {last}; cadence for stage {stage or 'unknown'} is {cadence_ms // 86_400_000} days."
    return _transition(state, DORMANT, ACTION_RE_ENGAGE, [reason], suggestion, now_ms, trigger, policy)


def pause_until_ms(state: CustomerState, now_ms: int, policy: Policy) -> int:
    """When the counted touches fall back to the recovery level if nobody touches the customer."""
    window_ms = policy.frequency_window.ms
    leaving: list[tuple[int, int]] = []
    for key, series in state.counts.series.items():
        if key.type != "touch" or key.kind in policy.uncounted_kinds:
            continue
        for start, size, count in series.buckets():
            if in_window(start, size, window_ms, now_ms):
                leaving.append((start + size + window_ms, count))
    remaining = sum(c for _, c in leaving)
    for leaves_at, count in sorted(leaving):
        remaining -= count
        if remaining <= policy.recover_at_or_below:
            return leaves_at
    return now_ms


def _transition(
    state: CustomerState,
    status: str,
    action_type: str,
    reasons: list[Reason],
    suggestion: str,
    now_ms: int,
    trigger: str,
    policy: Policy,
) -> Action:
    previous = state.status
    state.seq += 1
    digest = hashlib.sha256(f"{state.customer_id}\x1f{state.seq}\x1f{trigger}".encode()).hexdigest()
    _set_status(state, status, now_ms)
    profile = state.profile or {}
    action = Action(
        v=1,
        action_id=f"act_{digest[:24]}",
        type=action_type,
        customer_id=state.customer_id,
        at=format_ms(now_ms),
        status=status,
        previous_status=previous,
        reasons=reasons,
        suggestion=suggestion,
        owner_rep_id=profile.get("owner_rep_id"),
        profile=state.profile,
        counts=window_totals(state, now_ms, policy),
    )
    state.last_action = {k: action[k] for k in ("action_id", "type", "at", "reasons", "suggestion")}  # type: ignore[literal-required]
    return action


def _set_status(state: CustomerState, status: str, now_ms: int) -> None:
    if state.status != status:
        state.status = status
        state.status_since_ms = now_ms


def _stage(state: CustomerState) -> str | None:
    return (state.profile or {}).get("stage")
