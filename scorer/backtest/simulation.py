"""The backtest's replay: a history through the same pure core as the live scorer, offline.

The clock is simulated. Events are replayed in arrival order — their `received_at` when the
history has it (an `Arrival`; an event older than the grace period behind the newest one of its
customer is then late and ignored, as live), else their `occurred_at` — ties in input order, each
with `now` = its arrival. Before an event at time t every due timer at or before t fires, in due
order, exactly like the live scorer's due-time index would fire it (`engine.on_due` at the due
time, then the customer's next due time is scheduled again). After the last event the timers keep
firing up to `until`. No Faust, Kafka or Redis: the same input gives the same output, byte for byte.

Only the live timers that can change an outcome are fired (`rules_due_ms`): the live due time also
follows every window bucket leaving every window (for the snapshot), and most of those firings
change nothing — no action, no rule's state. `simulate(..., every_timer=True)` fires every live
timer instead; both emit the same actions at the same moments (tests/scorer/test_backtest_timers.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scorer.core import engine, lifecycle, signals
from scorer.core.advice import plural
from scorer.core.state import THROTTLED, ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.windows import FINE_HORIZON_MS
from services.actions import Action, Reason
from services.durations import HOUR_MS
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
    """When the profile took effect; None: in force from the customer's first event on."""


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
    start_ms: int | None = None
    end_ms: int | None = None
    timers_fired: int = 0
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


def rules_due_ms(state: CustomerState, policy: Policy, evaluated_ms: int) -> int | None:
    """A lower bound of the first moment after `evaluated_ms` (the customer's last evaluation) at
    which `engine.on_due` could decide otherwise than then, if no event or profile comes in between;
    None: never. Until then an `on_due` emits nothing and leaves the rules' state as it is.

    What on_due reads that changes with time alone, the state being otherwise fixed:
      - the lifecycle: a normal customer's cadence / silence deadline, the rest / silence of one
        cooling off (`engine.lifecycle_due_ms`; not filtered, like the live due time);
      - recovery: the end of the minimum throttle;
      - frequency_cap: while active, the moment the counted touches in its window fall to
        `recover_at_or_below` (counts only fall with time: buckets leave the windows, see
        `_counts_only_fall`); while inactive it cannot become active without a touch; and while
        the escalation key `frequency_cap_severe` holds, the moment they fall below
        `escalation_factor` x the cap (an update goes out when a key starts to hold again);
      - complaint: the end of the cool-off after the latest complaint;
      - reply_latency_slowdown: a baseline sample leaving the baseline window;
      - response_rate_drop / engagement_drop: read `min(now, watermark)`, fixed once now >= the
        watermark.
    unanswered_streak and the escalations do not depend on time.
    """
    policy = policy.for_profile(state.profile)
    if not _hysteresis_settles(policy):
        return evaluated_ms  # a rule may flip at every evaluation: due at once, every live timer counts
    times = [engine.lifecycle_due_ms(state, policy)]
    if state.status == THROTTLED:
        times.append(engine.due_times(state, policy, state.clock_ms)[0])
    times.append(signals.complaint_ends_ms(state, policy))
    if "frequency_cap" in state.active_rules:  # at once if it fell already (after a duplicate event)
        times.append(max(engine.pause_until_ms(state, state.clock_ms, policy), evaluated_ms + 1))
    if lifecycle.SEVERE_CAP in state.held_keys:  # an escalation key that stops holding as touches leave
        times.append(max(engine.severe_ends_ms(state, state.clock_ms, policy), evaluated_ms + 1))
    if policy.signals.latency_enabled:
        baseline_ms = policy.signals.latency_baseline.ms
        times += [ts + baseline_ms for ts, _ in state.latency_samples]
    times.append(state.watermark_ms)
    later = [t for t in times if t is not None and t > evaluated_ms]
    if (due := times[0]) is not None and due <= evaluated_ms:
        later.append(due)  # overdue already
    return min(later) if later else None


def _hysteresis_settles(policy: Policy) -> bool:
    """A rule with hysteresis gives the same answer when evaluated twice at the same moment only if
    its recovery threshold is below its trigger (the policy schema insists on it)."""
    s = policy.signals
    return policy.recover_at_or_below < policy.throttle_above and s.latency_recover_factor < s.latency_slowdown_factor


def _counts_only_fall(policy: Policy) -> bool:
    """True when a window count can only fall between two events and every future moment it falls
    at is already a live due time (`leaves_window_at`). A window between 47 h and 48 h is the
    exception: a minute bucket folded into its hour may come back into it (the fold at the 48 h
    horizon extends the bucket to the end of its hour)."""
    return all(not (FINE_HORIZON_MS - HOUR_MS <= w.ms < FINE_HORIZON_MS) for w in policy.windows)


def first_live_due_at_or_after(state: CustomerState, policy: Policy, at_ms: int) -> int | None:
    """The first due time >= at_ms the live scorer's timers would reach, skipping no-op firings:
    with nothing changing in between, its successive due times are the candidates of
    `engine.next_due_ms` in order (`engine.due_times`: window expiries, the end of the minimum
    throttle, the lifecycle's deadline, the end of a complaint's cool-off)."""
    policy = policy.for_profile(state.profile)
    times = [t for t in engine.due_times(state, policy, at_ms - 1) if t is not None and t >= at_ms]
    return min(times) if times else None


class _Replay:
    def __init__(self, policy: Policy, follow: str | None, every_timer: bool) -> None:
        self.policy = policy
        self.follow = follow
        self.every_timer = every_timer or not _counts_only_fall(policy)
        self.states: dict[str, CustomerState] = {}
        self.heap: list[tuple[int, str, bool]] = []
        self.due: dict[str, tuple[int, bool]] = {}
        """customer -> (due time, exact): not exact, the first live due time at or after it is
        looked up when it comes (`first_live_due_at_or_after`; often an event comes first)."""
        self.evaluated: dict[str, int] = {}
        """customer -> the clock of its last rule evaluation (events, profiles, timers)."""
        self.result = Simulation()

    def state(self, customer_id: str) -> CustomerState:
        if customer_id not in self.states:
            self.states[customer_id] = CustomerState(customer_id)
            self.result.customers.add(customer_id)
        return self.states[customer_id]

    def schedule(self, state: CustomerState, not_before_ms: int) -> None:
        """Index the customer's next due time (one entry per customer, like the live sorted set).

        The live due time, or, unless `every_timer`, the first live due time at which a rule's
        outcome can change (`rules_due_ms`): the live timers before it would change nothing. When
        that is after the clock, the live timers from the clock on are the candidates of
        `next_due_ms` in order, all after the clock; when it is not, it is the live due time itself."""
        if self.every_timer:
            self._enqueue(state.customer_id, self._live_due(state, not_before_ms), exact=True)
            return
        rules_due = rules_due_ms(state, self.policy, self.evaluated.get(state.customer_id, -1))
        if rules_due is not None and rules_due <= state.clock_ms:
            self._enqueue(state.customer_id, self._live_due(state, not_before_ms), exact=True)
        else:
            self._enqueue(state.customer_id, rules_due, exact=False)

    def _live_due(self, state: CustomerState, not_before_ms: int) -> int | None:
        due = engine.next_due_ms(state, self.policy)
        return None if due is None else max(due, not_before_ms)

    def _enqueue(self, customer_id: str, due: int | None, *, exact: bool) -> None:
        if due is None:
            self.due.pop(customer_id, None)
        elif self.due.get(customer_id) != (due, exact):
            self.due[customer_id] = (due, exact)
            heapq.heappush(self.heap, (due, customer_id, exact))

    def fire_until(self, now_ms: int) -> None:
        while self.heap and self.heap[0][0] <= now_ms:
            due_ms, customer_id, exact = heapq.heappop(self.heap)
            if self.due.get(customer_id) != (due_ms, exact):
                continue  # superseded by a later schedule
            del self.due[customer_id]
            state = self.states[customer_id]
            if not exact:  # the state has not changed since it was scheduled
                self._enqueue(customer_id, first_live_due_at_or_after(state, self.policy, due_ms), exact=True)
                continue
            self.result.timers_fired += 1
            self.emit(state, engine.on_due(state, due_ms, self.policy))
            self.evaluated[customer_id] = state.clock_ms
            self.schedule(state, due_ms + 1)  # time moves on even if a rule asked for now again

    def apply_profile(self, change: ProfileChange, now_ms: int) -> None:
        self.fire_until(now_ms)
        state = self.state(change.customer_id)
        actions = engine.apply_profile(state, change.profile, now_ms, self.policy)
        self.evaluated[change.customer_id] = state.clock_ms
        if change.customer_id == self.follow:
            self.result.timeline.append(Step(state.clock_ms, "profile", _profile_text(change.profile)))
            self.result.followed_profile = change.profile
        self.emit(state, actions)
        self.schedule(state, now_ms)

    def apply_event(self, arrival: Arrival) -> None:
        event, now_ms = arrival.event, arrival.at_ms
        self.fire_until(now_ms)
        state = self.state(event.customer_id)
        outcome = engine.apply_event(state, event, now_ms, self.policy)
        if outcome.result == engine.COUNTED:  # duplicates and late events are not evaluated
            self.evaluated[event.customer_id] = state.clock_ms
            if event.type == "touch" and (event.kind or "-") not in self.policy.uncounted_kinds:
                self.result.outcomes[CAP_TOUCHES] += 1
        self.result.outcomes[outcome.result] += 1
        if event.customer_id == self.follow:
            self.result.timeline.append(_event_step(state, event, outcome, self.policy, now_ms))
            if outcome.result == engine.COUNTED:
                self.result.followed_events.append(event)
        self.emit(state, outcome.actions)
        self.schedule(state, now_ms)

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
) -> Simulation:
    """Replay events and profiles with a simulated clock; `follow` records one customer's timeline.

    An event arrives at its `occurred_at`, or when its `Arrival` says. The clock runs to `until_ms`
    (default: the last arrival or timed profile); events and profiles after it are left out
    (`after_until` counts the events). `every_timer`: fire every live timer, also those that cannot
    change an outcome (the reference the tests compare with; slower).
    """
    replay = _Replay(policy, follow, every_timer)
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
            replay.apply_profile(item.payload, item.at_ms)
    replay.fire_until(end_ms)
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
            first[p.customer_id] = min(p.at_ms, first.get(p.customer_id, p.at_ms))
    items = [_Item(a.at_ms, 2, seq, a) for seq, a in enumerate(arrivals)]
    for seq, p in enumerate(profiles):
        if p.at_ms is None:
            items.append(_Item(first.get(p.customer_id, start_ms), 0, seq, p))
        else:
            items.append(_Item(p.at_ms, 1, seq, p))
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
