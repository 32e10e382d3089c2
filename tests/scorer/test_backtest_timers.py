"""The backtest fires only the live timers that can change an outcome (`rules_due_ms`); it must give
exactly what firing every live timer gives (`simulate(..., every_timer=True)`, the live scorer's
due times): the same actions — types, customers, moments, reasons, ids, counts, suggestions — in
the same order, the same event outcomes and the same followed timeline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fatigue.demo_data import generate
from scorer.backtest import Arrival, ProfileChange, Simulation, simulate
from scorer.core.state import ContactEvent
from scorer.history import contact_event
from services.contract import EventIn
from services.durations import DAY_MS, HOUR_MS, MINUTE_MS
from services.policy.model import Policy, default_policy, parse_policy

T0 = 1_790_000_000_000

# Every rule on, with windows, cooldowns, cadences and rests short enough for a few days of history
# to cross them all: frequency cap, recovery and escalation, complaints, streaks, latency, rate
# drops and their rests, re_engage, segments (another cadence, another cap), do_not_contact.
TIGHT_YAML = """
windows: [1h, 24h, 3d]
grace: 2d
cadence: {default: 2d, by_stage: {prospect: 1d, loyal: 4d}, silence: 3d, tolerance: 2h}
reply_latency: {kinds: [reply, call_answered], max_samples: 8}
frequency: {window: 24h, throttle_above: 3, recover_at_or_below: 1, uncounted_kinds: [transactional],
            escalation_factor: 1.5}
signals:
  complaint: {enabled: true, cool_off: 2d}
  unanswered_streak: {enabled: true, touches: 4, rest: 1d}
  reply_latency_slowdown: {enabled: true, recent: 2, baseline_window: 2d, min_baseline_samples: 2,
                           slowdown_factor: 1.5, recover_factor: 1.2, rest: 12h}
  response_rate_drop: {enabled: true, recent_touches: 2, min_baseline_touches: 3, settle: 6h, drop: 0.5,
                       rest: 30h}
  engagement_drop: {enabled: true, kinds: [open, click], recent_touches: 2, min_baseline_touches: 3,
                    settle: 6h, drop: 0.15, rest: 18h}
cooldowns: {min_throttle: 6h, re_engage: 1d, throttle_update: 12h}
segments:
  - {tier: B, cadence: 1d}
  - {stage: prospect, frequency: {throttle_above: 2, recover_at_or_below: 0}}
"""
TIGHT = parse_policy(TIGHT_YAML, "tight")

# Coarse 7-day cap (minute buckets folded into hours on the way out) and a 2-day window (the fine
# horizon itself).
COARSE = parse_policy("""
windows: [48h, 7d]
frequency: {window: 7d, throttle_above: 4, recover_at_or_below: 2}
cadence: {default: 3d, silence: 5d}
signals:
  reply_latency_slowdown: {enabled: true, recent: 2, baseline_window: 3d, min_baseline_samples: 2}
cooldowns: {min_throttle: 2h, re_engage: 2d}
""", "coarse")

POLICIES = {"tight": TIGHT, "coarse": COARSE, "default": default_policy()}
CUSTOMERS = ("c1", "c2", "c3")
TOUCH_KINDS = (None, "value", "promo", "transactional")
RESPONSE_KINDS = (None, "reply", "open", "click", "call_answered", "complaint", "unsubscribe", "bounce")


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ContactEvent | Arrival], list[ProfileChange], int]:
    """A few customers, touches and responses over ~6 days (often at the same moment, with
    duplicates; some arriving later than they happened, now and then past the grace period, or a
    little before), profiles from the start and changing on the way, and a clock run past the end."""
    step = draw(st.sampled_from((MINUTE_MS, 17 * MINUTE_MS, HOUR_MS)))
    n = draw(st.integers(min_value=1, max_value=40))
    events: list[ContactEvent] = []
    for i in range(n):
        at = T0 + step * draw(st.integers(min_value=0, max_value=6 * DAY_MS // step))
        customer = draw(st.sampled_from(CUSTOMERS))
        channel = draw(st.sampled_from(("email", "sms")))
        if draw(st.booleans()):
            events.append(ContactEvent(f"t{i}", "touch", customer, channel, at, draw(st.sampled_from(TOUCH_KINDS)),
                                       producer="p"))
        else:
            earlier = [e.event_id for e in events if e.customer_id == customer and e.type == "touch"]
            reply_to = draw(st.sampled_from([None, *earlier]))
            events.append(ContactEvent(f"r{i}", "response", customer, channel, at,
                                       draw(st.sampled_from(RESPONSE_KINDS)), in_reply_to=reply_to, producer="p"))
    events += draw(st.lists(st.sampled_from(events), max_size=4))  # duplicates, replayed in time order
    profile = st.fixed_dictionaries({"tier": st.sampled_from(("A", "B")),
                                     "stage": st.sampled_from(("prospect", "customer", "loyal"))},
                                    optional={"do_not_contact": st.booleans()})
    profiles = [ProfileChange(c, draw(profile)) for c in draw(st.lists(st.sampled_from(CUSTOMERS), unique=True))]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        at = T0 + MINUTE_MS * draw(st.integers(min_value=0, max_value=7 * DAY_MS // MINUTE_MS))
        profiles.append(ProfileChange(draw(st.sampled_from(CUSTOMERS)), draw(profile), at))
    delays = st.sampled_from((None, None, None, -2 * MINUTE_MS, 5 * MINUTE_MS, 3 * HOUR_MS, 2 * DAY_MS + HOUR_MS))
    arriving: list[ContactEvent | Arrival] = []
    for e in events:
        delay = draw(delays)
        arriving.append(e if delay is None else Arrival(e, e.occurred_at_ms + delay))
    latest = max(a.at_ms if isinstance(a, Arrival) else a.occurred_at_ms for a in arriving)
    until = latest + draw(st.integers(min_value=0, max_value=12 * DAY_MS))
    return arriving, profiles, until


LONGEST_DELAY = 2 * DAY_MS + HOUR_MS
"""The longest arrival delay of these histories. With timers settling that long (a timer due at d fires
`settle` after d, evaluated at d) every event arrives before a timer due after it happened: an event
behind the customer's clock is behind an *event*, and evaluated at the same clock whichever timers
fired. (A timer firing before an event that happened earlier would move the clock, and that event
would be evaluated at a moment that depends on which timers fired: the no-op ones too.)"""


def assert_same(fast: Simulation, every: Simulation) -> None:
    assert fast.actions == every.actions
    assert fast.outcomes == every.outcomes
    assert fast.customers == every.customers
    assert (fast.start_ms, fast.end_ms, fast.after_until) == (every.start_ms, every.end_ms, every.after_until)
    assert fast.timeline == every.timeline
    assert fast.timers_fired <= every.timers_fired


@pytest.mark.timeout(400)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), policy_name=st.sampled_from(sorted(POLICIES)), follow=st.sampled_from(CUSTOMERS))
def test_skipping_no_op_timers_gives_the_same_replay_as_firing_every_timer(
    history: tuple[list[ContactEvent | Arrival], list[ProfileChange], int], policy_name: str, follow: str
) -> None:
    events, profiles, until = history
    policy = POLICIES[policy_name]
    settle = LONGEST_DELAY
    fast = simulate(events, profiles, policy, until_ms=until, follow=follow, settle_ms=settle)
    every = simulate(events, profiles, policy, until_ms=until, follow=follow, every_timer=True, settle_ms=settle)
    assert_same(fast, every)
    in_order = [e.event if isinstance(e, Arrival) else e for e in events]
    fast = simulate(in_order, profiles, policy, until_ms=until, follow=follow)
    every = simulate(in_order, profiles, policy, until_ms=until, follow=follow, every_timer=True)
    assert_same(fast, every)
    assert fast.behind_clock == 0


def demo_history(customers: int) -> tuple[list[ContactEvent], list[ProfileChange], int]:
    people, bodies = generate(customers, seed=3, now=datetime(2026, 11, 30, tzinfo=UTC))
    events = [contact_event(EventIn.model_validate(body), "demo") for body in bodies]
    return events, [ProfileChange(p.customer_id, p.profile) for p in people], T0 + 400 * DAY_MS


def test_demo_history_gives_the_same_actions_with_far_fewer_timers() -> None:
    events, profiles, _ = demo_history(300)
    until = max(e.occurred_at_ms for e in events) + 30 * DAY_MS
    for policy in POLICIES.values():
        fast = simulate(events, profiles, policy, until_ms=until)
        every = simulate(events, profiles, policy, until_ms=until, every_timer=True)
        assert_same(fast, every)
        assert fast.actions and every.timers_fired > 3 * fast.timers_fired


def test_windows_whose_count_can_come_back_fire_every_timer() -> None:
    """A window between 47 h and 48 h may count a touch again once its minute bucket is folded into
    its hour: the replay then falls back to firing every live timer."""
    policy = parse_policy("windows: [2850m, 7d]\nfrequency: {window: 7d}\n", "odd")
    events, profiles, _ = demo_history(40)
    until = max(e.occurred_at_ms for e in events) + 10 * DAY_MS
    fast = simulate(events, profiles, policy, until_ms=until)
    every = simulate(events, profiles, policy, until_ms=until, every_timer=True)
    assert fast.timers_fired == every.timers_fired and fast.actions == every.actions


def test_unsettled_hysteresis_fires_every_timer() -> None:
    """A policy built without the schema's checks (recovery not below the trigger) may flip a rule
    at every evaluation: every live timer then counts."""
    base: Policy = TIGHT
    flapping = Policy(**{**{f: getattr(base, f) for f in base.__dataclass_fields__ if f != "_resolved"},
                         "recover_at_or_below": base.throttle_above, "segments": ()})
    events, profiles, _ = demo_history(40)
    until = max(e.occurred_at_ms for e in events) + 10 * DAY_MS
    fast = simulate(events, profiles, flapping, until_ms=until)
    every = simulate(events, profiles, flapping, until_ms=until, every_timer=True)
    assert fast.timers_fired == every.timers_fired and fast.actions == every.actions


def latency_history(duplicate_at_ms: int | None) -> list[ContactEvent]:
    """One touch answered quickly three times, then slowly twice: reply latency slows down (TIGHT:
    the last 2 replies against the earlier ones within 2 days), nothing else holds."""
    def reply(n: int, minutes: int) -> ContactEvent:
        return ContactEvent(f"r{n}", "response", "lat", "email", T0 + minutes * MINUTE_MS, "reply", producer="p")

    touch = ContactEvent("t0", "touch", "lat", "email", T0, "value", producer="p")
    events = [touch, reply(1, 10), reply(2, 20), reply(3, 30), reply(4, 10 * 60), reply(5, 12 * 60)]
    if duplicate_at_ms is not None:
        events.append(ContactEvent("t0", "touch", "lat", "email", duplicate_at_ms, "value", producer="p"))
    return events


def test_a_rule_clearing_between_timers_is_seen_at_the_next_live_timer() -> None:
    """The first baseline reply leaves the 2-day baseline at T0+2d+10min and the slowdown no longer
    holds (too few baseline replies), but no live timer is due then: the live scorer recovers at its
    next timer, the 3-day window expiry of the touch (the end of its hour + 3d), and so must the
    backtest — also when a duplicate event (counted by nothing, evaluating nothing) comes between."""
    no_rest = parse_policy(TIGHT_YAML.replace("recover_factor: 1.2, rest: 12h", "recover_factor: 1.2, rest: 9d"),
                           "tight, no latency rest in reach")
    for duplicate_at in (None, T0 + 2 * DAY_MS + 13 * HOUR_MS):  # after every baseline reply left
        events = latency_history(duplicate_at)
        fast = simulate(events, [], no_rest, until_ms=T0 + 4 * DAY_MS)
        every = simulate(events, [], no_rest, until_ms=T0 + 4 * DAY_MS, every_timer=True)
        assert_same(fast, every)
        assert [(a["type"], a["at"]) for a in fast.actions][:2] == [
            ("fatigue.throttle", "2026-09-22T00:13:20.000Z"),  # the 4th reply, 10 h after the touch
            ("fatigue.re_engage", "2026-09-24T15:00:00.000Z"),  # lifted, and the 2-day cadence overdue
        ]
        assert fast.actions[1]["reasons"][0]["rule"] == "reply_latency_slowdown_cleared"
        assert fast.actions[0]["reasons"][0]["rule"] == "reply_latency_slowdown"
