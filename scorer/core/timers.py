"""When a customer's timeline must be evaluated next, with no event in between.

The live scorer's due times (`engine.next_due_ms`) follow every moment a rule's outcome *may*
change — every window bucket leaving every window among them — and most firings change nothing.
`next_firing_ms` skips those: it is the first of them at which a rule can decide otherwise
(`rules_due_ms`, a lower bound, moved on to the due time the live timers would reach,
`first_live_due_at_or_after`). Firing only there gives exactly the actions firing every due time
gives (tests/scorer/test_backtest_timers.py compares the two over random histories); `every_timer`
fires them all (the reference).

Pure: no clock, no I/O.
"""

from __future__ import annotations

from scorer.core import engine, lifecycle, signals
from scorer.core.state import THROTTLED, CustomerState
from scorer.core.windows import FINE_HORIZON_MS
from services.durations import HOUR_MS
from services.policy.model import Policy


def next_firing_ms(state: CustomerState, policy: Policy, not_before_ms: int, *,
                   every_timer: bool = False) -> int | None:
    """The next moment (>= `not_before_ms`) the customer's timeline must be evaluated if nothing
    comes in between; None: never. `not_before_ms` is the clock after an event or a profile (a due
    time at that very moment still fires, after it) and the due time + 1 after a timer."""
    if every_timer or not counts_only_fall(policy):
        return _live_due(state, policy, not_before_ms)
    rules_due = rules_due_ms(state, policy, state.clock_ms)
    if rules_due is None:
        return None
    if rules_due <= state.clock_ms:
        return _live_due(state, policy, not_before_ms)
    due = first_live_due_at_or_after(state, policy, rules_due)
    return None if due is None else max(due, not_before_ms)


def _live_due(state: CustomerState, policy: Policy, not_before_ms: int) -> int | None:
    due = engine.next_due_ms(state, policy)
    return None if due is None else max(due, not_before_ms)


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
        `counts_only_fall`); while inactive it cannot become active without a touch; and while
        the escalation key `frequency_cap_severe` holds, the moment they fall below
        `escalation_factor` x the cap (an update goes out when a key starts to hold again);
      - complaint: the end of the cool-off after the latest complaint;
      - reply_latency_slowdown: a baseline sample leaving the baseline window;
      - response_rate_drop / engagement_drop: read `min(now, watermark)`, fixed once now >= the
        watermark.
    unanswered_streak and the escalations do not depend on time.
    """
    policy = policy.for_profile(state.profile)
    if not hysteresis_settles(policy):
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


def hysteresis_settles(policy: Policy) -> bool:
    """A rule with hysteresis gives the same answer when evaluated twice at the same moment only if
    its recovery threshold is below its trigger (the policy schema insists on it)."""
    s = policy.signals
    return policy.recover_at_or_below < policy.throttle_above and s.latency_recover_factor < s.latency_slowdown_factor


def counts_only_fall(policy: Policy) -> bool:
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
