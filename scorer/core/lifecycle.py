"""The customer lifecycle: a small state machine in which every state has a way out.

    normal ──(a time-bound condition holds)──────────────▶ throttled ──(time-bound ones clear)──▶ cooling_off
    normal ──(only response-bound conditions hold)───────────────────────────────────────────▶ cooling_off
    normal ──(cadence + tolerance passed / silence)──────▶ to_activate
    throttled / cooling_off ──(nothing holds)────────────▶ normal, or to_activate when overdue then
    cooling_off ──(rest without touches / silence)───────▶ to_activate
    cooling_off ──(a time-bound condition holds)─────────▶ throttled
    to_activate ──(a counted touch / an answer)──────────▶ normal;  ──(a condition holds)──▶ throttled | cooling_off

`TRANSITIONS` lists every move with what enters it and what the rep is told; `next_move` decides
one move from the facts of one evaluation (engine.py gathers them and carries the move out). The
status every earlier version showed is kept: normal | throttled (throttled, cooling_off) | dormant
(to_activate). The lists reps work from are the non-normal states (`list_entry`).

Time-bound conditions (frequency cap, complaint) end at a known time. Response-bound ones
(unanswered streak, reply latency, response and engagement rates) end on a response — or, so that
no one is forgotten, after their `rest` without touches: then the customer is to be activated.
Every exit from a throttle waits for `cooldowns.min_throttle` and says one thing in one message.
"""

from __future__ import annotations

from dataclasses import dataclass

from scorer.core.state import (
    PHASE_COOLING_OFF,
    PHASE_NORMAL,
    PHASE_THROTTLED,
    PHASE_TO_ACTIVATE,
    TIME_BOUND_RULES,
    CustomerState,
)
from services.actions import Reason
from services.names import (
    ACTION_RE_ENGAGE,
    ACTION_RECOVERED,
    ACTION_THROTTLE,
    LIST_COOLING_OFF,
    LIST_THROTTLED,
    LIST_TO_ACTIVATE,
)
from services.policy.model import Policy

NORMAL, THROTTLED, COOLING_OFF, TO_ACTIVATE = PHASE_NORMAL, PHASE_THROTTLED, PHASE_COOLING_OFF, PHASE_TO_ACTIVATE
PHASES = (NORMAL, THROTTLED, COOLING_OFF, TO_ACTIVATE)

LIST_OF_PHASE = {THROTTLED: LIST_THROTTLED, COOLING_OFF: LIST_COOLING_OFF, TO_ACTIVATE: LIST_TO_ACTIVATE}
SEVERE_CAP = "frequency_cap_severe"
"""Escalation key: counted touches at `frequency.escalation_factor` times the cap or more."""
ESCALATING = ("complaint", "frequency_cap", SEVERE_CAP)

# ---- causes: why a move happens (each is one row kind of TRANSITIONS) ----
THROTTLE = "throttle"
ESCALATE = "escalate"
SHIFT = "shift"
RECOVER = "recover"
LIFT_TO_ACTIVATE = "lift_to_activate"
NEGLECTED = "neglected"
WAKE = "wake"


SILENT = ""


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    cause: str
    enters_when: str
    told: tuple[str, ...]
    """The action types the rep may get for this move; SILENT ("") when it may say nothing (the
    lists still show the customer)."""
    says: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(NORMAL, THROTTLED, THROTTLE, "a time-bound condition holds (frequency cap, complaint)",
               (ACTION_THROTTLE,), "cool down, pause until the known end (pause_until)"),
    Transition(NORMAL, COOLING_OFF, THROTTLE, "only response-bound conditions hold (streak, latency, rates)",
               (ACTION_THROTTLE,), "cool down until the customer responds, or for the rest without touches"),
    Transition(NORMAL, TO_ACTIVATE, NEGLECTED, "a timer: no counted touch for longer than cadence + tolerance, "
               "or no response for the silence period", (ACTION_RE_ENGAGE, SILENT),
               "neglected / gone quiet: reach out on the best open channel at their golden hour "
               "(nothing within cooldowns.re_engage)"),
    Transition(THROTTLED, THROTTLED, ESCALATE, "a more severe rule starts to hold: a complaint, the frequency "
               "cap, or the cap times escalation_factor", (ACTION_THROTTLE,),
               "throttle update naming every active reason (once per rule per cooldowns.throttle_update)"),
    Transition(THROTTLED, COOLING_OFF, SHIFT, "the time-bound conditions cleared, response-bound ones hold",
               (SILENT,), "nothing new: the pause they were given already covers the rest"),
    Transition(THROTTLED, NORMAL, RECOVER, "nothing holds, min_throttle over, not overdue", (ACTION_RECOVERED,),
               "back in band, normal cadence may resume"),
    Transition(THROTTLED, TO_ACTIVATE, LIFT_TO_ACTIVATE, "nothing time-bound holds, min_throttle over, and the "
               "customer is overdue, or rested, or gone quiet", (ACTION_RE_ENGAGE, ACTION_RECOVERED),
               "one message: recovered and to re-engage (recovered within cooldowns.re_engage)"),
    Transition(COOLING_OFF, THROTTLED, ESCALATE, "a time-bound condition starts to hold", (ACTION_THROTTLE,),
               "throttle update naming every active reason"),
    Transition(COOLING_OFF, THROTTLED, SHIFT, "a time-bound condition starts to hold, told within "
               "cooldowns.throttle_update", (SILENT,), "nothing new (told lately)"),
    Transition(COOLING_OFF, NORMAL, RECOVER, "the customer responded: nothing holds, min_throttle over, not "
               "overdue", (ACTION_RECOVERED,), "back in band"),
    Transition(COOLING_OFF, TO_ACTIVATE, LIFT_TO_ACTIVATE, "the rest without touches passed, or the silence "
               "period, or the conditions cleared while overdue (all after min_throttle)",
               (ACTION_RE_ENGAGE, ACTION_RECOVERED),
               "one message: rested (or recovered, or gone quiet) and to re-engage, with channel and hour"),
    Transition(TO_ACTIVATE, NORMAL, WAKE, "a counted touch (unless the customer is the silent one), a positive "
               "response, or do_not_contact", (SILENT,), "nothing: the customer leaves the to_activate list"),
    Transition(TO_ACTIVATE, THROTTLED, THROTTLE, "a time-bound condition holds", (ACTION_THROTTLE,),
               "cool down"),
    Transition(TO_ACTIVATE, COOLING_OFF, THROTTLE, "only response-bound conditions hold", (ACTION_THROTTLE,),
               "cool down"),
)


@dataclass(frozen=True)
class Facts:
    """What one evaluation knows, the state being otherwise fixed."""

    phase: str
    conditions: tuple[str, ...]
    """Rules holding now (signals.RULES order)."""
    held: bool = False
    """Within cooldowns.min_throttle of the throttle's start."""
    overdue: tuple[str, ...] = ()
    """`cadence_overdue` / `no_response` as if the customer were normal (empty under do_not_contact)."""
    rest_over: bool = False
    """Every holding response-bound rule has had its rest without touches."""
    escalations: tuple[str, ...] = ()
    """Escalation keys that started to hold now and whose cooldown passed."""
    timer: bool = False
    """A due timer (not an event or a profile) asked: the only way into to_activate from normal."""
    woke: bool = False
    """The event just recorded ends a to_activate (a counted touch, a positive answer)."""
    may_activate: bool = True
    """False under do_not_contact: nobody is to re-engage the customer."""
    may_re_engage: bool = True
    """No re_engage within cooldowns.re_engage."""


@dataclass(frozen=True)
class Move:
    cause: str
    target: str
    told: str | None
    """Action type, or None: silent."""


def next_move(f: Facts) -> Move | None:
    """The one move this evaluation makes, or None. Pure; `TRANSITIONS` documents the result."""
    time_bound = any(rule in TIME_BOUND_RULES for rule in f.conditions)
    if f.phase in (NORMAL, TO_ACTIVATE):
        return _from_calm(f, time_bound)
    return _from_throttle(f, time_bound)


def _from_calm(f: Facts, time_bound: bool) -> Move | None:
    """normal and to_activate: into a throttle, out of neglect, into neglect."""
    if f.conditions:
        return Move(THROTTLE, THROTTLED if time_bound else COOLING_OFF, ACTION_THROTTLE)
    if f.phase == TO_ACTIVATE:
        return Move(WAKE, NORMAL, None) if f.woke or not f.may_activate else None
    if f.timer and f.overdue and f.may_activate:
        return Move(NEGLECTED, TO_ACTIVATE, ACTION_RE_ENGAGE if f.may_re_engage else None)
    return None


def _from_throttle(f: Facts, time_bound: bool) -> Move | None:
    """throttled and cooling_off: worse, between the two, or out — after min_throttle, in one message."""
    if time_bound:
        if f.escalations:
            return Move(ESCALATE, THROTTLED, ACTION_THROTTLE)
        return Move(SHIFT, THROTTLED, None) if f.phase == COOLING_OFF else None
    if f.held:
        return Move(SHIFT, COOLING_OFF, None) if f.conditions and f.phase == THROTTLED else None
    lift_told = ACTION_RE_ENGAGE if f.may_re_engage else ACTION_RECOVERED
    if f.conditions:
        if f.may_activate and (f.rest_over or "no_response" in f.overdue):
            return Move(LIFT_TO_ACTIVATE, TO_ACTIVATE, lift_told)
        if f.rest_over:  # do_not_contact: rested, but nobody is to reach out
            return Move(RECOVER, NORMAL, ACTION_RECOVERED)
        return Move(SHIFT, COOLING_OFF, None) if f.phase == THROTTLED else None
    if f.overdue and f.may_activate:
        return Move(LIFT_TO_ACTIVATE, TO_ACTIVATE, lift_told)
    return Move(RECOVER, NORMAL, ACTION_RECOVERED)


def escalation_keys(reasons: list[Reason], policy: Policy) -> list[str]:
    """The escalation keys that hold for these conditions (a subset of ESCALATING, in its order)."""
    keys = []
    for reason in reasons:
        if reason["rule"] in ESCALATING:
            keys.append(reason["rule"])
        if reason["rule"] == "frequency_cap" and reason["observed"] >= policy.escalation_factor * max(
                policy.throttle_above, 1):
            keys.append(SEVERE_CAP)
    return [k for k in ESCALATING if k in keys]


def new_escalations(state: CustomerState, keys: list[str], now_ms: int, policy: Policy) -> list[str]:
    """Keys that hold now, did not at the last evaluation, and were not told within the cooldown."""
    cooldown = policy.throttle_update_cooldown_ms
    return [k for k in keys if k not in state.held_keys and now_ms - state.told.get(k, now_ms - cooldown) >= cooldown]


def rest_end_ms(state: CustomerState, policy: Policy, rules: list[str]) -> int | None:
    """When the response-bound `rules` have all had their rest without touches: from the later of
    the last counted touch and the throttle's start. None when one of them has no rest."""
    rests = [policy.signals.rest_ms(rule) for rule in rules if rule not in TIME_BOUND_RULES]
    if not rests or any(rest is None for rest in rests):
        return None
    start = max(state.last_touch_ms or 0, state.status_since_ms or 0)
    return start + max(rest for rest in rests if rest is not None)


def list_entry(state: CustomerState) -> tuple[str, int] | None:
    """(list, score) of the customer on the lists reps work from, or None (normal).

    Ascending score = most urgent first: to_activate by how long overdue (the earliest first),
    cooling_off and throttled by how recent (the latest first).
    """
    name = LIST_OF_PHASE.get(state.phase)
    if name is None:
        return None
    since = state.phase_since_ms or 0
    if name == LIST_TO_ACTIVATE:
        return name, state.overdue_since_ms if state.overdue_since_ms is not None else since
    return name, -since
