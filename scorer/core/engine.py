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
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from scorer.core import signals, timing
from scorer.core.signals import response_bit
from scorer.core.state import (
    DORMANT,
    MAX_COMPLAINTS,
    MAX_RECENT_TOUCHES,
    MAX_SEEN_IDS,
    NORMAL,
    THROTTLED,
    ContactEvent,
    CustomerState,
)
from scorer.core.timefmt import format_ms
from scorer.core.windows import SeriesKey, in_window, leaves_window_at
from services.actions import Action, Reason
from services.durations import DAY_MS
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy.model import Policy

NEGATIVE_KINDS = frozenset({"unsubscribe", "complaint", "bounce"})
"""Responses that do not mean the customer is back."""

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
    policy = policy.for_profile(state.profile)
    now_ms = _tick_clock(state, now_ms, policy)
    if event.dedup_key in state.seen:
        return Outcome(DUPLICATE, reason=f"event {event.event_id!r} already counted")
    if state.watermark_ms is not None and event.occurred_at_ms < state.watermark_ms - policy.grace_ms:
        return Outcome(LATE, reason="older than the grace period behind the newest event of this customer")
    _record(state, event, now_ms, policy)
    return Outcome(COUNTED, _evaluate(state, now_ms, policy, trigger=event.dedup_key))


def apply_profile(state: CustomerState, profile: dict[str, Any], now_ms: int, policy: Policy) -> list[Action]:
    now_ms = _tick_clock(state, now_ms, policy)
    state.profile = profile
    if state.first_seen_ms is None:
        state.first_seen_ms = now_ms
    if profile.get("do_not_contact") and state.status == DORMANT:
        _set_status(state, NORMAL, now_ms)  # nobody is to re-engage a do-not-contact customer
    # A new tier or stage may put the customer in a segment with other thresholds.
    trigger = "profile:" + json.dumps(profile, sort_keys=True)
    return _evaluate(state, now_ms, policy.for_profile(profile), trigger)


def on_due(state: CustomerState, now_ms: int, policy: Policy) -> list[Action]:
    """Re-evaluate rules that change with time alone: windows expiring, cadence overdue."""
    policy = policy.for_profile(state.profile)
    now_ms = _tick_clock(state, now_ms, policy)
    trigger = f"due:{now_ms}"
    actions = _evaluate(state, now_ms, policy, trigger)
    due = re_engage_due_ms(state, policy)
    if due is not None and now_ms >= due:
        last = state.last_re_engage_ms
        if last is not None and now_ms < last + policy.re_engage_cooldown_ms:
            state.dormant_for = [r for r, d in _dormancy_dues(state, policy).items() if d is not None and now_ms >= d]
            _set_status(state, DORMANT, now_ms)  # the rep was told within the cooldown: no repeat ping
        else:
            state.last_re_engage_ms = now_ms
            actions.append(_re_engage(state, now_ms, policy, trigger))
    return actions


def next_due_ms(state: CustomerState, policy: Policy) -> int | None:
    """The next moment `on_due` can change something: a window boundary or the cadence deadline."""
    policy = policy.for_profile(state.profile)
    complaint_ends = signals.complaint_ends_ms(state, policy)
    held_until = _throttle_held_until(state, policy) if state.status == THROTTLED else None
    candidates = [
        held_until if held_until is not None and held_until > state.clock_ms else None,
        state.counts.next_expiry_ms([w.ms for w in policy.windows], state.clock_ms),
        re_engage_due_ms(state, policy),
        complaint_ends if complaint_ends is not None and complaint_ends > state.clock_ms else None,
    ]
    times = [t for t in candidates if t is not None]
    return min(times) if times else None


def re_engage_due_ms(state: CustomerState, policy: Policy) -> int | None:
    """When the customer becomes overdue: reps silent beyond the cadence, or the customer silent."""
    dues = [t for t in _dormancy_dues(state, policy).values() if t is not None]
    return min(dues) if dues else None


def _dormancy_dues(state: CustomerState, policy: Policy) -> dict[str, int | None]:
    policy = policy.for_profile(state.profile)
    profile = state.profile or {}
    if state.status != NORMAL or profile.get("do_not_contact") or state.first_seen_ms is None:
        return {}
    touched = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
    answered = state.last_response_ms if state.last_response_ms is not None else state.first_seen_ms
    return {
        "cadence_overdue": touched + policy.cadence_ms(profile.get("stage")),
        "no_response": answered + policy.silence_ms,
    }


def counted_touches(state: CustomerState, now_ms: int, policy: Policy) -> int:
    return signals.counted_touches_in_window(state, now_ms, policy)


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
    bisect.insort(state.recent_touches, (ts, event.channel, event.event_id, event.kind or "-", 0))
    del state.recent_touches[:-MAX_RECENT_TOUCHES]
    if (event.kind or "-") not in policy.uncounted_kinds:
        state.last_touch_ms = ts if state.last_touch_ms is None else max(state.last_touch_ms, ts)
        recent = ts + policy.cadence_ms(_stage(state)) > state.clock_ms
        if state.status == DORMANT and recent and "no_response" not in state.dormant_for:
            _set_status(state, NORMAL, state.clock_ms)  # a touch ends the reps' silence, not the customer's


def _record_response(state: CustomerState, event: ContactEvent, policy: Policy) -> None:
    ts = event.occurred_at_ms
    state.last_response_ms = ts if state.last_response_ms is None else max(state.last_response_ms, ts)
    if state.status == DORMANT and ts + policy.silence_ms > state.clock_ms and event.kind not in NEGATIVE_KINDS:
        _set_status(state, NORMAL, state.clock_ms)  # the customer is back
    if event.kind == "complaint":
        bisect.insort(state.complaints_ms, ts)
        del state.complaints_ms[:-MAX_COMPLAINTS]
    timing.record_response_time(state, ts, event.kind)
    key = f"{event.channel}|{event.kind or '-'}"
    state.last_responses[key] = max(ts, state.last_responses.get(key, ts))
    if event.kind == "unsubscribe" and policy.signals.unsubscribe_closes_channel:
        if ts > state.last_responses.get(f"{event.channel}|resubscribe", -1):  # unless opted back in since
            state.closed_channels[event.channel] = max(ts, state.closed_channels.get(event.channel, ts))
    if event.kind == "resubscribe" and state.closed_channels.get(event.channel, ts) <= ts:
        state.closed_channels.pop(event.channel, None)
    index = _answered_touch(state, event)
    if index is None:
        return
    touch_ms, channel, touch_id, kind, mask = state.recent_touches[index]
    state.recent_touches[index] = (touch_ms, channel, touch_id, kind, mask | response_bit(event.kind))
    if event.kind in policy.reply_kinds:
        bisect.insort(state.latency_samples, (ts, max(0, ts - touch_ms)))
        del state.latency_samples[: -policy.max_latency_samples]


def _answered_touch(state: CustomerState, event: ContactEvent) -> int | None:
    """Index in recent_touches of the touch a response answers: `in_reply_to`, else the latest
    earlier touch on the response's channel."""
    touches = state.recent_touches
    if event.in_reply_to is not None:
        for i in range(len(touches) - 1, -1, -1):
            if touches[i][2] == event.in_reply_to:
                return i
    for i in range(len(touches) - 1, -1, -1):
        if touches[i][1] == event.channel and touches[i][0] <= event.occurred_at_ms:
            return i
    return None


# ---- rules ----


def _evaluate(state: CustomerState, now_ms: int, policy: Policy, trigger: str) -> list[Action]:
    """Throttle while any fatigue condition holds; recover when none does (signals.py)."""
    reasons = signals.active_conditions(state, now_ms, policy)
    state.active_rules = [r["rule"] for r in reasons]
    if state.status == THROTTLED:
        state.throttled_for = sorted(set(state.throttled_for) | set(state.active_rules))
    if state.status != THROTTLED and reasons:
        state.throttled_for = list(state.active_rules)
        until = _pause_until(state, now_ms, policy, reasons)
        action = _transition(state, THROTTLED, ACTION_THROTTLE, reasons, _throttle_advice(reasons, until), now_ms,
                             trigger, policy)
        if until is not None:
            action["pause_until"] = format_ms(until)  # type: ignore[typeddict-unknown-key]
        return [action]
    if state.status == THROTTLED and not reasons and now_ms >= _throttle_held_until(state, policy):
        cleared = [_cleared(rule, state, now_ms, policy) for rule in signals.RULES if rule in state.throttled_for] or [
            Reason(rule="conditions_cleared", window="-", observed=0, threshold=0)
        ]
        suggestion = "Back in band: " + "; ".join(_cleared_text(r) for r in cleared) + ". Normal cadence may resume."
        state.throttled_for = []
        return [_transition(state, NORMAL, ACTION_RECOVERED, cleared, suggestion, now_ms, trigger, policy)]
    return []


def _throttle_held_until(state: CustomerState, policy: Policy) -> int:
    """A throttle lasts at least `cooldowns.min_throttle`, whatever clears it (no flapping)."""
    return (state.status_since_ms or 0) + policy.min_throttle_ms


def _pause_until(state: CustomerState, now_ms: int, policy: Policy, reasons: list[Reason]) -> int | None:
    """When the time-bound conditions end, if every active condition is time-bound."""
    ends = []
    for reason in reasons:
        if reason["rule"] == "frequency_cap":
            ends.append(pause_until_ms(state, now_ms, policy))
        elif reason["rule"] == "complaint":
            ends.append(signals.complaint_ends_ms(state, policy) or now_ms)
        else:
            return None  # ends when the customer responds again, not at a known time
    return max(ends) if ends else None


_REASON_TEXT = {
    "frequency_cap": lambda r: f"{r['observed']:.0f} touches in {r['window']} (cap {r['threshold']:.0f})",
    "complaint": lambda r: f"complaint or spam report within {r['window']}",
    "unanswered_streak": lambda r: f"{r['observed']:.0f} touches in a row without any response",
    "reply_latency_slowdown": lambda r: f"replies slowing down x{r['observed']} ({r.get('detail', '')})",
    "response_rate_drop": lambda r: f"responses falling off ({r.get('detail', '')})",
    "engagement_drop": lambda r: f"opens and clicks falling off ({r.get('detail', '')})",
}


def _throttle_advice(reasons: list[Reason], until: int | None) -> str:
    why = "; ".join(_REASON_TEXT[r["rule"]](r) for r in reasons)
    when = f"until {format_ms(until)}" if until is not None else "until the customer responds again"
    return f"Cool down: {why}. Pause non-transactional touches {when}."


def _cleared(rule: str, state: CustomerState, now_ms: int, policy: Policy) -> Reason:
    if rule == "frequency_cap":
        return Reason(rule="frequency_recovered", window=policy.frequency_window.label,
                      observed=signals.counted_touches_in_window(state, now_ms, policy),
                      threshold=policy.recover_at_or_below)
    return Reason(rule=f"{rule}_cleared", window="-", observed=0, threshold=0)


def _cleared_text(reason: Reason) -> str:
    if reason["rule"] == "frequency_recovered":
        return f"{reason['observed']:.0f} touches in {reason['window']}"
    return reason["rule"].removesuffix("_cleared").replace("_", " ") + " cleared"


def _re_engage(state: CustomerState, now_ms: int, policy: Policy, trigger: str) -> Action:
    stage = _stage(state)
    overdue = {rule: due for rule, due in _dormancy_dues(state, policy).items() if due is not None and now_ms >= due}
    reasons, sentences = [], []
    if "cadence_overdue" in overdue:
        cadence_ms = policy.cadence_ms(stage)
        reference = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
        idle_days = (now_ms - (reference or now_ms)) / DAY_MS
        reasons.append(Reason(rule="cadence_overdue", window="since_last_touch", observed=round(idle_days, 2),
                              threshold=round(cadence_ms / DAY_MS, 2)))
        last = "no touch yet" if state.last_touch_ms is None else f"last touch {idle_days:.0f} days ago"
        sentences.append(f"Neglected: {last}; cadence for stage {stage or 'unknown'} is {cadence_ms // DAY_MS} days.")
    if "no_response" in overdue:
        reference = state.last_response_ms if state.last_response_ms is not None else state.first_seen_ms
        silent_days = (now_ms - (reference or now_ms)) / DAY_MS
        reasons.append(Reason(rule="no_response", window="since_last_response", observed=round(silent_days, 2),
                              threshold=round(policy.silence_ms / DAY_MS, 2)))
        heard = "never answered" if state.last_response_ms is None else f"no answer for {silent_days:.0f} days"
        sentences.append(f"Gone quiet: {heard}; try another channel or a value touch rather than more of the same.")
    state.dormant_for = list(overdue)
    suggestion = " ".join(sentences)
    channel = timing.best_channel(state, policy.retention_ms, now_ms)
    open_channels = [c for c in ([channel[0]] if channel else []) if c not in state.closed_channels]
    when = timing.golden_window(state, (state.profile or {}).get("timezone"), now_ms)
    if open_channels:
        suggestion += f" Reach out on {open_channels[0]} (answers there most)"
        suggestion += f", ideally around {when[0]} {when[1]}." if when else "."
    elif when:
        suggestion += f" They answer most around {when[0]} {when[1]}."
    action = _transition(state, DORMANT, ACTION_RE_ENGAGE, reasons, suggestion, now_ms, trigger, policy)
    if open_channels:
        action["best_channel"] = open_channels[0]  # type: ignore[typeddict-unknown-key]
    if when:
        action["best_time"] = {"local": when[0], "timezone": when[1]}  # type: ignore[typeddict-unknown-key]
    return action


def leave_times(state: CustomerState, window_ms: int, now_ms: int, policy: Policy, limit: int = 10_000) -> list[int]:
    """When each counted touch now inside the window leaves it (sorted; at most `limit`)."""
    leaving: list[tuple[int, int]] = []
    for key, series in state.counts.series.items():
        if key.type != "touch" or key.kind in policy.uncounted_kinds:
            continue
        for start, size, count in series.buckets():
            if in_window(start, size, window_ms, now_ms):
                leaving.append((leaves_window_at(start, size, window_ms), count))
    times: list[int] = []
    for leaves_at, count in sorted(leaving):
        times.extend([leaves_at] * min(count, limit - len(times)))
        if len(times) >= limit:
            break
    return times


def pause_until_ms(state: CustomerState, now_ms: int, policy: Policy) -> int:
    """When the counted touches fall back to the recovery level if nobody touches the customer."""
    times = leave_times(state, policy.frequency_window.ms, now_ms, policy)
    must_leave = len(times) - policy.recover_at_or_below
    return times[must_leave - 1] if must_leave > 0 else now_ms


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
