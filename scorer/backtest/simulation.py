"""The backtest's replay: a history through the same pure core as the live scorer, offline.

The clock is simulated. Events are replayed in arrival order — their `received_at` when the
history has it (an `Arrival`; an event older than the grace period behind the newest one of its
customer is then late and ignored, as live), else their `occurred_at` — ties in input order. Each
is evaluated at its own time, never at its arrival (scorer/core/timeline.py: event time decides,
processing time only fires): arrivals only say when the due timers of the customers fire. Before
an event arriving at time t every due timer at or before t fires, in due order, at its due time,
exactly like the live scorer's due-time index fires it. After the last event the timers keep firing
up to `until`. No Faust, Kafka or Redis: the same input gives the same output, byte for byte.

Only the live timers that can change an outcome are fired (scorer/core/timers.py): the live due
times also follow every window bucket leaving every window, and most of those firings change
nothing. `simulate(..., every_timer=True)` fires every live timer instead; both emit the same actions
at the same moments (tests/scorer/test_backtest_timers.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scorer.core import delivery, engine, timeline
from scorer.core.advice import plural
from scorer.core.state import DUE_UNKNOWN, ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from services.actions import Action, Reason
from services.policy.model import Policy

OUTCOME_WORDS = {engine.COUNTED: "recorded", engine.DUPLICATE: "duplicate", engine.LATE: "late"}
"""What the report calls the core's outcomes: "counted" is kept for "counted toward the cap"."""
CAP_TOUCHES = "cap_touches"
"""Outcome counter key: recorded touches of a kind that counts toward the frequency cap."""


@dataclass(frozen=True)
class ProfileChange:
    customer_id: str
    profile: dict[str, Any]
    at_ms: int | None = None
    """When the profile took effect (its `updated_at`); None: in force from the customer's first event on."""
    received_ms: int | None = None
    """When the live scorer would have received it; None: when it took effect."""


@dataclass(frozen=True)
class Arrival:
    """An event and when the live scorer would have received it (the history's `received_at`)."""

    event: ContactEvent
    at_ms: int


@dataclass(frozen=True)
class Step:
    """One line of a customer's timeline."""

    at_ms: int
    kind: str  # "profile" | "event" | "action"
    text: str
    detail: tuple[str, ...] = ()


@dataclass
class Simulation:
    """What a replay produced: every action in the order it happened, and what it took."""

    actions: list[Action] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    customers: set[str] = field(default_factory=set)
    states: dict[str, CustomerState] = field(default_factory=dict)
    """Every customer's state at the end of the replay (what the lists and the API would show)."""
    start_ms: int | None = None
    end_ms: int | None = None
    timers_fired: int = 0
    delivered: list[Action] = field(default_factory=list)
    """What the reps would get from the live scorer (scorer/core/delivery.py): at most one message
    per customer and piece of work, history told once it has caught up with the clock."""
    withheld: Counter[str] = field(default_factory=Counter)
    """Transitions recorded but not sent, by reason (names.WITHHELD_REASONS)."""
    behind_clock: int = 0
    """Events that arrived after the customer's timeline had passed them (a timer fired at a later
    moment): counted in their windows at their own time, evaluated at the customer's clock."""
    after_until: int = 0
    timeline: list[Step] = field(default_factory=list)
    """Steps of the followed customer (`follow`), in time order."""
    followed_events: list[ContactEvent] = field(default_factory=list)
    """The followed customer's recorded events (neither duplicate nor late), in replay order."""
    followed_profile: dict[str, Any] | None = None
    """The followed customer's profile at the end of the replay."""


@dataclass(frozen=True, order=True)
class _Item:
    at_ms: int
    order: int  # at the same moment: untimed profiles, timed profiles, events; then input order
    seq: int
    payload: Arrival | ProfileChange = field(compare=False)


class _Replay:
    def __init__(self, policy: Policy, follow: str | None, every_timer: bool, settle_ms: int) -> None:
        self.policy = policy
        self.follow = follow
        self.every_timer = every_timer
        self.settle_ms = settle_ms
        self.states: dict[str, CustomerState] = {}
        self.heap: list[tuple[int, str]] = []
        """(when the timer fires, customer), like the live due-time index (scorer/processor.py
        `_fire_at`): `settle_ms` after the customer's next due time and after its latest arrival. An
        entry that is not the customer's current one is skipped when it comes up."""
        self.fire_at: dict[str, int] = {}
        self.unit: dict[str, list[Action]] = {}
        """customer -> the transitions what arrived at `unit_at` made: one piece of work, like one
        batch of the live scorer, decided on together (scorer/core/delivery.py) when time moves on."""
        self.unit_newest: dict[str, int] = {}
        self.unit_at: int | None = None
        self.result = Simulation(states=self.states)

    def state(self, customer_id: str) -> CustomerState:
        if customer_id not in self.states:
            self.states[customer_id] = CustomerState(customer_id)
            self.result.customers.add(customer_id)
        return self.states[customer_id]

    def schedule(self, state: CustomerState, unit_ms: int, *, arrived: bool) -> None:
        """Index the customer as the live scorer does after a piece of work done at `unit_ms`."""
        customer_id = state.customer_id
        due = state.due_ms
        if due == DUE_UNKNOWN or (state.pending_action is not None and (due is None or due > unit_ms)):
            due = unit_ms
        if due is None:
            self.fire_at.pop(customer_id, None)
            return
        fire_at = (max(due, unit_ms) if arrived else due) + self.settle_ms
        if self.fire_at.get(customer_id) != fire_at:
            self.fire_at[customer_id] = fire_at
            heapq.heappush(self.heap, (fire_at, customer_id))

    def fire_until(self, now_ms: int) -> None:
        """The timers that fire by `now_ms`, each at its moment: advanced `settle_ms` behind it (an
        event arriving that late is still evaluated first), as the live scorer's timers do."""
        while self.heap and self.heap[0][0] <= now_ms:
            fire_at, customer_id = heapq.heappop(self.heap)
            if self.fire_at.get(customer_id) != fire_at or customer_id in self.unit:
                continue  # superseded by a later schedule, or to be advanced with its unit
            del self.fire_at[customer_id]
            state = self.states[customer_id]
            self.result.timers_fired += 1
            until = fire_at - self.settle_ms
            fired = timeline.advance(state, until, self.policy, every_timer=self.every_timer)
            self.emit(state, fired)
            self.deliver(delivery.decide(state, fired, until))
            self.schedule(state, fire_at, arrived=False)

    def begin(self, at_ms: int, customer_id: str) -> CustomerState:
        """What arrives at `at_ms` joins the unit of that moment; a later moment closes it first."""
        if self.unit_at is not None and at_ms != self.unit_at:
            self.flush()
        self.fire_until(at_ms)
        self.unit_at = at_ms
        self.unit.setdefault(customer_id, [])
        return self.state(customer_id)

    def flush(self) -> None:
        """Decide what the rep hears of the unit's transitions, as the live scorer does after a batch."""
        assert self.unit_at is not None or not self.unit
        for customer_id, made in self.unit.items():
            state = self.states[customer_id]
            assert self.unit_at is not None
            if self.settle_ms == 0:  # no settle: the clock fires what is due at once (as live)
                fired = timeline.advance(state, self.unit_at, self.policy, every_timer=self.every_timer)
                self.emit(state, fired)
                made = made + fired
            wait = delivery.is_history(self.unit_newest.get(customer_id), self.unit_at, self.settle_ms)
            self.deliver(delivery.decide(state, made, self.unit_at, wait=wait))
            self.schedule(state, self.unit_at, arrived=True)
        self.unit.clear()
        self.unit_newest.clear()
        self.unit_at = None

    def deliver(self, decision: delivery.Decision) -> None:
        if decision.sent is not None:
            self.result.delivered.append(decision.sent)
        self.result.withheld.update(reason for _, reason in decision.withheld)

    def apply_profile(self, change: ProfileChange, now_ms: int, effective_ms: int | None) -> None:
        """A profile arriving at `now_ms`, in force from `effective_ms` (its updated_at) or, untimed, now."""
        state = self.begin(now_ms, change.customer_id)
        at_ms = now_ms if effective_ms is None else effective_ms
        actions = timeline.apply_profile(state, change.profile, at_ms, self.policy, every_timer=self.every_timer)
        if change.customer_id == self.follow:
            self.result.timeline.append(Step(max(state.clock_ms, now_ms), "profile", _profile_text(change.profile)))
            self.result.followed_profile = change.profile
        self.emit(state, actions)
        self.unit[change.customer_id] += actions
        self.schedule(state, now_ms, arrived=True)

    def apply_event(self, arrival: Arrival) -> None:
        event, now_ms = arrival.event, arrival.at_ms
        state = self.begin(now_ms, event.customer_id)
        newest = self.unit_newest.get(event.customer_id, event.occurred_at_ms)
        self.unit_newest[event.customer_id] = max(newest, event.occurred_at_ms)
        outcome = timeline.apply_event(state, event, self.policy, every_timer=self.every_timer)
        if outcome.result == engine.COUNTED and event.occurred_at_ms < state.clock_ms:
            self.result.behind_clock += 1
        if outcome.result == engine.COUNTED and event.type == "touch" and (
                event.kind or "-") not in self.policy.uncounted_kinds:
            self.result.outcomes[CAP_TOUCHES] += 1
        self.result.outcomes[outcome.result] += 1
        if event.customer_id == self.follow:
            self.result.timeline.append(_event_step(state, event, outcome, self.policy, now_ms))
            if outcome.result == engine.COUNTED:
                self.result.followed_events.append(event)
        self.emit(state, outcome.actions)
        self.unit[event.customer_id] += outcome.actions
        self.schedule(state, now_ms, arrived=True)

    def emit(self, state: CustomerState, actions: list[Action]) -> None:
        self.result.actions.extend(actions)
        if state.customer_id == self.follow:
            self.result.timeline.extend(_action_step(a) for a in actions)


def simulate(
    events: Iterable[ContactEvent | Arrival],
    profiles: Iterable[ProfileChange],
    policy: Policy,
    *,
    until_ms: int | None = None,
    follow: str | None = None,
    every_timer: bool = False,
    settle_ms: int = 0,
) -> Simulation:
    """Replay events and profiles with a simulated clock; `follow` records one customer's timeline.

    An event arrives at its `occurred_at`, or when its `Arrival` says. The clock runs to `until_ms`
    (default: the last arrival or timed profile); events and profiles after it are left out
    (`after_until` counts the events). `every_timer`: fire every live timer, also those that cannot
    change an outcome (the reference the tests compare with; slower). `settle_ms`: as the live
    scorer's FATIGUE_TIMER_SETTLE_S, a customer's timers fire this long after their due time and after
    its latest arrival; they are evaluated at their due time whatever it is. The clock runs `settle_ms`
    past `until_ms`, so that what is due by `until_ms` fires.
    """
    replay = _Replay(policy, follow, every_timer, settle_ms)
    arrivals = [e if isinstance(e, Arrival) else Arrival(e, e.occurred_at_ms) for e in events]
    profiles = list(profiles)
    times = [a.at_ms for a in arrivals] + [p.at_ms for p in profiles if p.at_ms is not None]
    end_ms = until_ms if until_ms is not None else max(times, default=None)
    if end_ms is None:
        return replay.result
    start_ms = min(min(times, default=end_ms), end_ms)
    replay.result.start_ms, replay.result.end_ms = start_ms, end_ms
    for item in _replay_order(arrivals, profiles, start_ms):
        if item.at_ms > end_ms:
            replay.result.after_until += isinstance(item.payload, Arrival)
        elif isinstance(item.payload, Arrival):
            replay.apply_event(item.payload)
        else:
            replay.apply_profile(item.payload, item.at_ms, item.payload.at_ms)
    replay.flush()
    replay.fire_until(end_ms + settle_ms)
    return replay.result


def _replay_order(arrivals: list[Arrival], profiles: list[ProfileChange], start_ms: int) -> list[_Item]:
    """Events by arrival (ties in input order); a profile with a time just before the events of
    that moment; one without just before the customer's first event or timed profile, or at the
    start of the history for a customer that has neither."""
    first: dict[str, int] = {}
    for a in arrivals:
        customer = a.event.customer_id
        first[customer] = min(a.at_ms, first.get(customer, a.at_ms))
    for p in profiles:
        if p.at_ms is not None:
            arrives = p.received_ms if p.received_ms is not None else p.at_ms
            first[p.customer_id] = min(arrives, first.get(p.customer_id, arrives))
    items = [_Item(a.at_ms, 2, seq, a) for seq, a in enumerate(arrivals)]
    for seq, p in enumerate(profiles):
        if p.at_ms is None:
            items.append(_Item(first.get(p.customer_id, start_ms), 0, seq, p))
        else:
            items.append(_Item(p.received_ms if p.received_ms is not None else p.at_ms, 1, seq, p))
    return sorted(items)


# ---- timeline steps ----


def _profile_text(profile: dict[str, Any]) -> str:
    shown = [f"{key} {value}" for key, value in profile.items() if key != "do_not_contact" or value]
    return "profile: " + (", ".join(shown) or "(empty)")


def _event_step(state: CustomerState, event: ContactEvent, outcome: engine.Outcome, policy: Policy,
                arrived_ms: int) -> Step:
    policy = policy.for_profile(state.profile)  # the customer's segment may have its own window and cap
    counted = engine.counted_touches(state, state.clock_ms, policy)
    word = OUTCOME_WORDS[outcome.result]
    if outcome.result == engine.COUNTED and event.type == "touch" and (event.kind or "-") in policy.uncounted_kinds:
        word += ", not toward the cap"
    text = (f"{event.type} {event.channel} {event.kind or '-'} {event.event_id} [{word}]: "
            f"{plural(counted, 'touch', 'touches')} counted toward the cap in {policy.frequency_window.label}, "
            f"status {state.status}")
    detail = [outcome.reason] if outcome.reason else []
    if arrived_ms != event.occurred_at_ms:
        detail.append(f"received {format_ms(arrived_ms)}")
    return Step(event.occurred_at_ms, "event", text, tuple(detail))


def _action_step(action: Action) -> Step:
    text = f"{action['type']}: {action['previous_status']} -> {action['status']}"
    return Step(at_ms(action), "action", text, ("reasons: " + reasons_text(action["reasons"]), action["suggestion"]))


def reasons_text(reasons: list[Reason]) -> str:
    return "; ".join(f"{r['rule']} {r['window']} observed {r['observed']:g} threshold {r['threshold']:g}"
                     for r in reasons)


def at_ms(action: Action) -> int:
    return int(datetime.fromisoformat(action["at"]).timestamp() * 1000)
