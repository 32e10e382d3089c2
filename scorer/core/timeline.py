"""A customer's timeline in event time: what the live scorer, the backtest and the dry run all call.

    apply_event(state, event, policy)            -> Outcome       the timers due up to the event first
    apply_profile(state, profile, at_ms, policy) -> list[Action]  likewise up to the profile's time
    advance(state, until_ms, policy)             -> list[Action]  the timers due up to `until_ms`

Event time decides, processing time only fires. Every evaluation happens at the moment it is about:
an event at its `occurred_at` (never earlier than the customer's clock, which never goes back), a
timer at its due time. So every rest, cool-off, cadence and silence runs from the touch or response
that starts it, and the same history gives the same transitions whether it arrives live, late, in
one batch or replayed. Processing time only says *when* the due timers are fired (`advance`): the
live scorer calls it with the wall clock, the backtest with its simulated one.

`state.due_ms` is the customer's next due time (`timers.next_firing_ms`), kept up to date by every
function here. Pure: no clock, no I/O.
"""

from __future__ import annotations

from typing import Any

from scorer.core import engine, timers
from scorer.core.state import DUE_UNKNOWN, ContactEvent, CustomerState
from services.actions import Action
from services.policy.model import Policy

MAX_FIRINGS = 100_000
"""A guard: one `advance` that needs more evaluations than this is a bug in the due times, raised
(the scorer sets the customer's timer aside) instead of spinning."""


class TimerRunaway(RuntimeError):
    """The due times did not move on: a bug, never an outage."""


def apply_event(state: CustomerState, event: ContactEvent, policy: Policy, *,
                every_timer: bool = False) -> engine.Outcome:
    """Fire what is due up to the event, then record and evaluate it at its own time (or at the
    customer's clock when it comes behind it: counted, but a decision taken since stands)."""
    fired = advance(state, event.occurred_at_ms, policy, every_timer=every_timer)
    outcome = engine.apply_event(state, event, max(state.clock_ms, event.occurred_at_ms), policy)
    if outcome.result == engine.COUNTED:
        state.last_producer = event.producer
        _schedule(state, policy, state.clock_ms, every_timer)
    outcome.actions = fired + outcome.actions
    return outcome


def apply_profile(state: CustomerState, profile: dict[str, Any], at_ms: int, policy: Policy, *,
                  every_timer: bool = False) -> list[Action]:
    """A profile change at `at_ms` (its `updated_at`). For a customer never evaluated yet (no event,
    no timer) it is an attribute, not a moment of the timeline: it does not move the clock, so a
    history imported afterwards is still evaluated at its own times."""
    if state.clock_ms == 0:
        state.profile = profile
        if state.first_seen_ms is None:
            state.first_seen_ms = at_ms
        _schedule(state, policy, at_ms, every_timer)
        return []
    fired = advance(state, at_ms, policy, every_timer=every_timer)
    actions = engine.apply_profile(state, profile, max(state.clock_ms, at_ms), policy)
    _schedule(state, policy, state.clock_ms, every_timer)
    return fired + actions


def advance(state: CustomerState, until_ms: int, policy: Policy, *, every_timer: bool = False) -> list[Action]:
    """Evaluate every due time up to `until_ms` (inclusive), each at its own moment, in order."""
    if state.due_ms == DUE_UNKNOWN:
        _schedule(state, policy, state.clock_ms, every_timer)
    actions: list[Action] = []
    for _ in range(MAX_FIRINGS):
        due = state.due_ms
        if due is None or due > until_ms:
            return actions
        actions += engine.on_due(state, due, policy)
        _schedule(state, policy, due + 1, every_timer)  # time moves on even if a rule asked for now again
    raise TimerRunaway(f"customer {state.customer_id!r}: more than {MAX_FIRINGS} timers before {until_ms}")


def _schedule(state: CustomerState, policy: Policy, not_before_ms: int, every_timer: bool) -> None:
    state.due_ms = timers.next_firing_ms(state, policy, not_before_ms, every_timer=every_timer)
