"""The fatigue engine: events, profiles and due timers in; actions out.

    apply_event(state, event, now_ms, policy)  -> Outcome   (counts, latency, the lifecycle)
    apply_profile(state, profile, now_ms, policy) -> list[Action]
    on_due(state, now_ms, policy)              -> list[Action]   (rests, re_engage, recovery by expiry)
    next_due_ms(state, policy)                 -> when on_due must run next, or None

Every function mutates `state` in place and never reads a clock. Each evaluation gathers the facts
(conditions, dues, rests, escalations) and makes at most one lifecycle move (lifecycle.py), so one
situation is one message, never one per event.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from scorer.core import advice, lifecycle, signals, timing
from scorer.core.lifecycle import COOLING_OFF, NORMAL, THROTTLED, TO_ACTIVATE, Facts, Move
from scorer.core.recording import NEGATIVE_KINDS, record
from scorer.core.state import STATUS_OF_PHASE, TIME_BOUND_RULES, ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from services.actions import Action, Reason
from services.durations import DAY_MS
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy.model import Policy

__all__ = ["COUNTED", "DUPLICATE", "LATE", "NEGATIVE_KINDS", "Outcome", "apply_event", "apply_profile",
           "counted_touches", "due_times", "leave_times", "lifecycle_due_ms", "next_due_ms", "on_due",
           "pause_until_ms", "re_engage_due_ms", "reply_latency", "throttle_until_ms", "window_totals"]

COUNTED = "counted"
DUPLICATE = "duplicate"
LATE = "late"


@dataclass
class Outcome:
    """What happened to one event: `counted`, `duplicate` or `late`, and the actions it caused."""

    result: str
    actions: list[Action] = field(default_factory=list)
    reason: str = ""

    def __init__(self, result: str, actions: list[Action] | None = None, reason: str = "") -> None:
        self.result = result
        self.actions = [] if actions is None else actions
        self.reason = reason


def apply_event(state: CustomerState, event: ContactEvent, now_ms: int, policy: Policy) -> Outcome:
    policy = policy.for_profile(state.profile)
    if event.dedup_key in state.seen:
        return Outcome(DUPLICATE, reason=f"event {event.event_id!r} already counted")
    if state.watermark_ms is not None and event.occurred_at_ms < state.watermark_ms - policy.grace_ms:
        return Outcome(LATE, reason="older than the grace period behind the newest event of this customer")
    now_ms = _tick_clock(state, now_ms, policy)  # neither a duplicate nor a late event moves the clock
    woke = record(state, event, now_ms, policy)
    return Outcome(COUNTED, _evaluate(state, now_ms, policy, event.dedup_key, woke=woke))


def apply_profile(state: CustomerState, profile: dict[str, Any], now_ms: int, policy: Policy) -> list[Action]:
    now_ms = _tick_clock(state, now_ms, policy)
    state.profile = profile
    if state.first_seen_ms is None:
        state.first_seen_ms = now_ms
    # A new tier or stage may put the customer in a segment with other thresholds; a
    # do_not_contact ends a to_activate (nobody is to re-engage the customer).
    trigger = "profile:" + json.dumps(profile, sort_keys=True)
    return _evaluate(state, now_ms, policy.for_profile(profile), trigger)


def on_due(state: CustomerState, now_ms: int, policy: Policy) -> list[Action]:
    """Re-evaluate what changes with time alone: windows expiring, rests, cadence and silence."""
    policy = policy.for_profile(state.profile)
    now_ms = _tick_clock(state, now_ms, policy)
    return _evaluate(state, now_ms, policy, f"due:{now_ms}", timer=True)


def due_times(state: CustomerState, policy: Policy, after_ms: int) -> list[int | None]:
    """The moments `on_due` may decide otherwise: the end of the minimum throttle, the next window
    expiry after `after_ms`, the lifecycle's own due time, the end of a complaint's cool-off."""
    return [
        _throttle_held_until(state, policy) if state.phase in (THROTTLED, COOLING_OFF) else None,
        state.counts.next_expiry_ms([w.ms for w in policy.windows], after_ms),
        lifecycle_due_ms(state, policy),
        signals.complaint_ends_ms(state, policy),
    ]


def next_due_ms(state: CustomerState, policy: Policy) -> int | None:
    """The next moment `on_due` can change something (the live scorer's due time)."""
    policy = policy.for_profile(state.profile)
    held, expiry, due, complaint = due_times(state, policy, state.clock_ms)
    times = [t for t in (held, complaint) if t is not None and t > state.clock_ms]
    times += [t for t in (expiry, due) if t is not None]
    return min(times) if times else None


def lifecycle_due_ms(state: CustomerState, policy: Policy) -> int | None:
    """When the lifecycle moves on by time alone: normal -> to_activate (cadence + tolerance passed,
    strictly; silence), cooling_off -> to_activate (rest or silence, not before min_throttle)."""
    policy = policy.for_profile(state.profile)
    if state.phase == NORMAL:
        dues = _dormancy_dues(state, policy)
        return min(dues.values()) if dues else None
    if state.phase == COOLING_OFF:
        rest = lifecycle.rest_end_ms(state, policy, state.active_rules)
        silence = _dormancy_dues(state, policy).get("no_response")
        ends = [t for t in (rest, silence) if t is not None]
        return max(min(ends), _throttle_held_until(state, policy)) if ends else None
    return None


re_engage_due_ms = lifecycle_due_ms
"""The earlier name (a normal customer's cadence / silence deadline)."""


def _dormancy_dues(state: CustomerState, policy: Policy) -> dict[str, int]:
    """As if the customer were normal: when cadence + tolerance has passed without a counted touch
    (the first millisecond strictly after) and when the silence period without any response ends
    (unless the rep was told of this silence already)."""
    profile = state.profile or {}
    if profile.get("do_not_contact") or state.first_seen_ms is None:
        return {}
    touched = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
    answered = state.last_response_ms if state.last_response_ms is not None else state.first_seen_ms
    dues = {"cadence_overdue": touched + policy.cadence_ms(profile.get("stage")) + policy.cadence_tolerance_ms + 1}
    silence_due = answered + policy.silence_ms
    if state.silence_alerted_ms is None or state.silence_alerted_ms < silence_due:
        dues["no_response"] = silence_due
    return dues


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


def _tick_clock(state: CustomerState, now_ms: int, policy: Policy) -> int:
    """The state's clock never goes back; windows are advanced to it."""
    state.clock_ms = max(state.clock_ms, now_ms)
    state.counts.advance(state.clock_ms, policy.retention_ms)
    return state.clock_ms


# ---- one evaluation, one move ----


def _evaluate(state: CustomerState, now_ms: int, policy: Policy, trigger: str, *, timer: bool = False,
              woke: bool = False) -> list[Action]:
    reasons = signals.active_conditions(state, now_ms, policy)
    rules = [r["rule"] for r in reasons]
    state.active_rules = rules
    if state.phase == NORMAL and not rules and not timer:
        if state.held_keys:
            state.held_keys = []
        return []  # what next_move answers for these facts, without building them (the hot path)
    throttled = state.phase in (THROTTLED, COOLING_OFF)
    if throttled:
        state.throttled_for = sorted(set(state.throttled_for) | set(rules))
    keys = lifecycle.escalation_keys(reasons, policy)
    escalations = lifecycle.new_escalations(state, keys, now_ms, policy) if throttled else []
    state.held_keys = keys
    rest = lifecycle.rest_end_ms(state, policy, rules) if throttled and rules else None
    last_ping = state.last_re_engage_ms
    facts = Facts(
        phase=state.phase,
        conditions=tuple(rules),
        held=throttled and now_ms < _throttle_held_until(state, policy),
        overdue=_overdue_now(state, now_ms, policy, lifting=throttled),
        rest_over=rest is not None and now_ms >= rest,
        escalations=tuple(escalations),
        timer=timer,
        woke=woke,
        may_activate=not (state.profile or {}).get("do_not_contact"),
        may_re_engage=last_ping is None or now_ms >= last_ping + policy.re_engage_cooldown_ms,
    )
    move = lifecycle.next_move(facts)
    if move is None:
        return []
    return _carry_out(state, move, facts, reasons, now_ms, policy, trigger)


def _overdue_now(state: CustomerState, now_ms: int, policy: Policy, *, lifting: bool) -> tuple[str, ...]:
    """The dormancy rules that hold at `now_ms`. A normal customer is overdue the first millisecond
    strictly after cadence + tolerance; a throttle lifting at the very moment cadence + tolerance has
    elapsed already counts it (one situation, one message: not `recovered` now and `re_engage` a
    millisecond later)."""
    dues = _dormancy_dues(state, policy)
    return tuple(rule for rule, due in dues.items()
                 if now_ms >= (due - 1 if lifting and rule == "cadence_overdue" else due))


def _carry_out(state: CustomerState, move: Move, facts: Facts, reasons: list[Reason], now_ms: int,
               policy: Policy, trigger: str) -> list[Action]:
    if move.cause == lifecycle.THROTTLE:
        state.throttled_for = list(state.active_rules)
        state.told = dict.fromkeys(state.held_keys, now_ms)
        return [_throttle(state, move.target, reasons, now_ms, policy, trigger)]
    if move.cause == lifecycle.ESCALATE:
        state.told.update(dict.fromkeys(facts.escalations, now_ms))
        return [_throttle(state, THROTTLED, reasons, now_ms, policy, trigger, escalation=list(facts.escalations))]
    if move.cause == lifecycle.RECOVER:
        if facts.conditions:  # rested under do_not_contact: forgiven like any rest, nobody reaches out
            rested_ms = now_ms - max(state.last_touch_ms or 0, state.status_since_ms or 0)
            reasons = _rested_reasons(state, facts.conditions, rested_ms, policy)
            text = advice.rested(reasons, rested_ms) + " The profile says do not contact."
            state.fresh_start_ms = now_ms
        else:
            reasons = _cleared_reasons(state, now_ms, policy)
            text = advice.recovered(reasons)
        state.throttled_for, state.told = [], {}
        return [_transition(state, NORMAL, ACTION_RECOVERED, reasons, text, now_ms, trigger, policy)]
    if move.cause in (lifecycle.NEGLECTED, lifecycle.LIFT_TO_ACTIVATE):
        return _to_activate(state, move, facts, now_ms, policy, trigger)
    _enter(state, move.target, now_ms)  # SHIFT, WAKE: silent (the lists show it)
    if move.target == NORMAL:
        state.dormant_for = []
    return []


def _throttle(state: CustomerState, target: str, reasons: list[Reason], now_ms: int, policy: Policy, trigger: str,
              escalation: list[str] | None = None) -> Action:
    previous = state.status
    _enter(state, target, now_ms)
    until = throttle_until_ms(state, now_ms, policy, reasons)
    response_ends_it = all(r["rule"] not in TIME_BOUND_RULES for r in reasons)
    if escalation:
        text = advice.escalation(escalation, reasons, policy.escalation_factor, until)
    else:
        text = advice.throttle(reasons, until, response_ends_it)
    action = _transition(state, target, ACTION_THROTTLE, reasons, text, now_ms, trigger, policy, previous=previous,
                         extra={"pause_until": format_ms(until)} if until is not None else None)
    if escalation:
        action["escalation"] = escalation
    return action


def _to_activate(state: CustomerState, move: Move, facts: Facts, now_ms: int, policy: Policy,
                 trigger: str) -> list[Action]:
    """Into to_activate: neglected (normal, a timer) or a throttle lifting (cleared while overdue,
    rested, gone quiet) — in one message, whose reasons say all of it."""
    dues = _dormancy_dues(state, policy)
    overdue = [r for r in facts.overdue if r in dues]
    reasons: list[Reason] = []
    sentences: list[str] = []
    start_ms = [dues[r] for r in overdue]
    if move.cause == lifecycle.LIFT_TO_ACTIVATE:
        cleared = [r for r in _cleared_reasons(state, now_ms, policy) if r["rule"] != "conditions_cleared"]
        if cleared:
            reasons += cleared
            sentences.append("Recovered: " + "; ".join(advice.cleared(r) for r in cleared) + ".")
        if facts.rest_over and facts.conditions:
            rested_ms = now_ms - max(state.last_touch_ms or 0, state.status_since_ms or 0)
            rested = _rested_reasons(state, facts.conditions, rested_ms, policy)
            reasons += rested
            sentences.append(advice.rested(rested, rested_ms))
            overdue = [r for r in overdue if r != "cadence_overdue"]  # the rest says it
            rest_end = lifecycle.rest_end_ms(state, policy, list(facts.conditions))
            start_ms = [t for t in (rest_end, dues.get("no_response") if "no_response" in overdue else None) if t]
        state.fresh_start_ms = now_ms
    overdue_reasons, overdue_sentences = _overdue_reasons(state, overdue, now_ms, policy)
    reasons += overdue_reasons
    sentences += overdue_sentences
    state.dormant_for = overdue + ([r["rule"] for r in reasons if r["rule"].endswith("_rested")])
    if "no_response" in overdue:
        state.silence_alerted_ms = now_ms
    state.throttled_for, state.told = [], {}
    channel, when = _next_step(state, now_ms, policy)
    suggestion = " ".join(sentences) + advice.next_step(channel, when)
    previous = state.status
    _enter(state, TO_ACTIVATE, now_ms)
    state.overdue_since_ms = min(min(start_ms), now_ms) if start_ms else now_ms
    if move.told is None:
        return []  # re-engaged within the cooldown: the to_activate list shows it
    if move.told == ACTION_RE_ENGAGE:
        state.last_re_engage_ms = now_ms
    action = _transition(state, TO_ACTIVATE, move.told, reasons, suggestion, now_ms, trigger, policy,
                         previous=previous)
    if channel:
        action["best_channel"] = channel
    if when:
        action["best_time"] = {"local": when[0], "timezone": when[1]}
    return [action]


def _overdue_reasons(state: CustomerState, overdue: list[str], now_ms: int,
                     policy: Policy) -> tuple[list[Reason], list[str]]:
    stage = (state.profile or {}).get("stage")
    reasons, sentences = [], []
    if "cadence_overdue" in overdue:
        cadence_ms = policy.cadence_ms(stage)
        reference = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
        idle_ms = now_ms - (reference if reference is not None else now_ms)
        reasons.append(Reason(rule="cadence_overdue", window="since_last_touch", observed=round(idle_ms / DAY_MS, 2),
                              threshold=round(cadence_ms / DAY_MS, 2)))
        sentences.append(advice.neglected(None if state.last_touch_ms is None else idle_ms, stage, cadence_ms))
    if "no_response" in overdue:
        reference = state.last_response_ms if state.last_response_ms is not None else state.first_seen_ms
        silent_ms = now_ms - (reference if reference is not None else now_ms)
        reasons.append(Reason(rule="no_response", window="since_last_response", observed=round(silent_ms / DAY_MS, 2),
                              threshold=round(policy.silence_ms / DAY_MS, 2)))
        sentences.append(advice.gone_quiet(None if state.last_response_ms is None else silent_ms))
    return reasons, sentences


def to_activate_reasons(state: CustomerState, now_ms: int, policy: Policy) -> list[Reason]:
    """Why a to_activate customer is on the list, with the numbers as of `now_ms`."""
    policy = policy.for_profile(state.profile)
    reasons, _ = _overdue_reasons(state, [r for r in state.dormant_for if not r.endswith("_rested")], now_ms, policy)
    idle_ms = now_ms - (state.last_touch_ms if state.last_touch_ms is not None else now_ms)
    for rested in (r for r in state.dormant_for if r.endswith("_rested")):
        rest = policy.signals.rest_ms(rested.removesuffix("_rested")) or 0
        reasons.append(Reason(rule=rested, window="since_last_touch", observed=round(idle_ms / DAY_MS, 2),
                              threshold=round(rest / DAY_MS, 2)))
    return reasons


def _rested_reasons(state: CustomerState, rules: tuple[str, ...], rested_ms: int, policy: Policy) -> list[Reason]:
    streak = signals.streak_length(state, policy)
    return [Reason(rule=f"{rule}_rested", window="since_last_touch", observed=round(rested_ms / DAY_MS, 2),
                   threshold=round((policy.signals.rest_ms(rule) or 0) / DAY_MS, 2),
                   detail=advice.rested_detail(rule, streak))
            for rule in rules]


def _cleared_reasons(state: CustomerState, now_ms: int, policy: Policy) -> list[Reason]:
    found = [_cleared(rule, state, now_ms, policy) for rule in signals.RULES
             if rule in state.throttled_for and rule not in state.active_rules]
    return found or [Reason(rule="conditions_cleared", window="-", observed=0, threshold=0)]


def _cleared(rule: str, state: CustomerState, now_ms: int, policy: Policy) -> Reason:
    if rule == "frequency_cap":
        return Reason(rule="frequency_recovered", window=policy.frequency_window.label,
                      observed=signals.counted_touches_in_window(state, now_ms, policy),
                      threshold=policy.recover_at_or_below)
    return Reason(rule=f"{rule}_cleared", window="-", observed=0, threshold=0)


def next_step(state: CustomerState, now_ms: int, policy: Policy) -> tuple[str | None, tuple[str, str] | None]:
    """(best open channel, (local hour of the week, time zone)) to reach the customer; None where unknown."""
    return _next_step(state, now_ms, policy.for_profile(state.profile))


def _next_step(state: CustomerState, now_ms: int, policy: Policy) -> tuple[str | None, tuple[str, str] | None]:
    found = timing.best_channel(state, policy.retention_ms, now_ms, state.closed_channels)
    return (found[0] if found else None), timing.golden_window(state)


# ---- when a throttle ends ----


def _throttle_held_until(state: CustomerState, policy: Policy) -> int:
    """A throttle lasts at least `cooldowns.min_throttle`, whatever clears it (no flapping)."""
    return (state.status_since_ms or 0) + policy.min_throttle_ms


def throttle_until_ms(state: CustomerState, now_ms: int, policy: Policy, reasons: list[Reason]) -> int | None:
    """When a throttle held by these conditions ends if nobody touches the customer: the latest of
    the frequency cap's recovery, the complaint cool-off, the rest of the response-bound rules and
    the minimum throttle. None when one of them ends on a response only (no rest configured)."""
    ends = [_throttle_held_until(state, policy)]
    responsive = []
    for reason in reasons:
        if reason["rule"] == "frequency_cap":
            ends.append(pause_until_ms(state, now_ms, policy))
        elif reason["rule"] == "complaint":
            ends.append(signals.complaint_ends_ms(state, policy) or now_ms)
        else:
            responsive.append(reason["rule"])
    if responsive:
        rest = lifecycle.rest_end_ms(state, policy, responsive)
        if rest is None:
            return None
        ends.append(rest)
    return max(ends)


def leave_times(state: CustomerState, window_ms: int, now_ms: int, policy: Policy, limit: int = 10_000) -> list[int]:
    """When each counted touch now inside the window leaves it (sorted; at most `limit`)."""
    leaving: list[tuple[int, int]] = []
    for key, series in state.counts.series.items():
        if key.type == "touch" and key.kind not in policy.uncounted_kinds:
            leaving += series.leaving(window_ms, now_ms)
    leaving.sort()  # the series' sorted runs merged in one C sort (heapq.merge ran a Python generator)
    times: list[int] = []
    for leaves_at, count in leaving:
        times.extend([leaves_at] * min(count, limit - len(times)))
        if len(times) >= limit:
            break
    return times


def pause_until_ms(state: CustomerState, now_ms: int, policy: Policy, level: int | None = None) -> int:
    """When the counted touches fall back to `level` (default: the recovery level) if nobody
    touches the customer."""
    times = leave_times(state, policy.frequency_window.ms, now_ms, policy)
    must_leave = len(times) - (policy.recover_at_or_below if level is None else level)
    return times[must_leave - 1] if must_leave > 0 else now_ms


def severe_ends_ms(state: CustomerState, now_ms: int, policy: Policy) -> int:
    """When the counted touches fall below `escalation_factor` x the cap (the escalation key
    `frequency_cap_severe` stops holding) if nobody touches the customer."""
    below = math.ceil(policy.escalation_factor * max(policy.throttle_above, 1)) - 1
    return pause_until_ms(state, now_ms, policy, level=below)


# ---- actions ----


def _enter(state: CustomerState, phase: str, now_ms: int) -> None:
    if phase != state.phase:
        state.phase, state.phase_since_ms = phase, now_ms
    status = STATUS_OF_PHASE[phase]
    if status != state.status:
        state.status, state.status_since_ms = status, now_ms


def _transition(
    state: CustomerState,
    phase: str,
    action_type: str,
    reasons: list[Reason],
    suggestion: str,
    now_ms: int,
    trigger: str,
    policy: Policy,
    *,
    previous: str | None = None,
    extra: dict[str, str] | None = None,
) -> Action:
    previous = previous or state.status
    state.seq += 1
    digest = hashlib.sha256(f"{state.customer_id}\x1f{state.seq}\x1f{trigger}".encode()).hexdigest()
    _enter(state, phase, now_ms)
    profile = state.profile or {}
    action = Action(
        v=1,
        action_id=f"act_{digest[:24]}",
        type=action_type,
        customer_id=state.customer_id,
        at=format_ms(now_ms),
        status=state.status,
        previous_status=previous,
        reasons=reasons,
        suggestion=suggestion,
        owner_rep_id=profile.get("owner_rep_id"),
        profile=state.profile,
        counts=window_totals(state, now_ms, policy),
        lifecycle=phase,
    )
    if extra:
        action.update(extra)  # type: ignore[typeddict-item]
    state.last_action = {k: action[k] for k in ("action_id", "type", "at", "reasons", "suggestion")}  # type: ignore[literal-required]
    if "pause_until" in action:
        state.last_action["pause_until"] = action["pause_until"]
    return action
