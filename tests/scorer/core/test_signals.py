"""Response-aware fatigue signals, each on the default policy unless a test narrows it."""

from __future__ import annotations

import pytest

from scorer.core import engine
from scorer.core.state import NORMAL, THROTTLED, ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.views import snapshot
from services.durations import DAY_MS, HOUR_MS, MINUTE_MS
from services.policy.model import Policy, default_policy, parse_policy

DEFAULT = default_policy()
NOW = 1_790_000_000_000


def only(signal: str) -> Policy:
    """The default policy with every other response-aware signal off and no frequency cap in reach."""
    names = ["complaint", "unanswered_streak", "reply_latency_slowdown", "response_rate_drop", "engagement_drop"]
    lines = [f"  {n}: {{enabled: false}}" for n in names if n != signal]
    cap = "frequency: {throttle_above: 1000, recover_at_or_below: 999}\n"
    return parse_policy(cap + "signals:\n" + "\n".join(lines) + "\n", signal)


def touch(i: int, at: int, channel: str = "email") -> ContactEvent:
    return ContactEvent(f"t{i}", "touch", "c1", channel, at, kind="value", producer="p")


def response(i: int, at: int, kind: str, channel: str = "email", to: str | None = None) -> ContactEvent:
    return ContactEvent(f"r{i}", "response", "c1", channel, at, kind=kind, in_reply_to=to, producer="p")


def feed(state: CustomerState, events: list[ContactEvent], policy: Policy, now: int = NOW) -> list[dict]:
    out: list[dict] = []
    for event in events:
        out += engine.apply_event(state, event, max(now, event.occurred_at_ms), policy).actions
    return out


def test_a_complaint_throttles_at_once_and_lifts_after_the_cool_off() -> None:
    policy = only("complaint")
    state = CustomerState("c1")
    actions = feed(state, [touch(1, NOW - DAY_MS), response(1, NOW, "complaint")], policy)
    assert [a["type"] for a in actions] == ["fatigue.throttle"]
    assert actions[0]["reasons"][0]["rule"] == "complaint"
    assert actions[0]["pause_until"] == format_ms(NOW + 30 * DAY_MS)
    due = engine.next_due_ms(state, policy)
    assert due is not None and due <= NOW + 30 * DAY_MS
    assert engine.on_due(state, NOW + 30 * DAY_MS - 1, policy) == []
    # The cool-off ends the very moment 30 d cadence + 1 d tolerance have passed since the touch: one
    # message says both (issue 17: not `recovered` now and `re_engage` a millisecond later).
    [lifted] = engine.on_due(state, NOW + 30 * DAY_MS, policy)
    assert lifted["type"] == "fatigue.re_engage" and lifted["at"] == format_ms(NOW + 30 * DAY_MS)
    assert [r["rule"] for r in lifted["reasons"]] == ["complaint_cleared", "cadence_overdue"]
    assert lifted["reasons"][1]["observed"] == 31
    assert engine.on_due(state, NOW + 30 * DAY_MS + 1, policy) == []


def test_a_cool_off_ending_a_minute_before_the_cadence_passes_recovers_then_re_engages() -> None:
    """Not a coinciding deadline: two moments, two messages (each true when it is sent)."""
    policy = only("complaint")
    state = CustomerState("c1")
    feed(state, [touch(1, NOW - DAY_MS + MINUTE_MS), response(1, NOW, "complaint")], policy)
    [lifted] = engine.on_due(state, NOW + 30 * DAY_MS, policy)
    assert lifted["type"] == "fatigue.recovered"
    [neglected] = engine.on_due(state, NOW + 30 * DAY_MS + MINUTE_MS + 1, policy)
    assert neglected["type"] == "fatigue.re_engage"


def test_unsubscribe_closes_that_channel_only() -> None:
    state = CustomerState("c1")
    feed(state, [touch(1, NOW - DAY_MS, "sms"), response(1, NOW, "unsubscribe", "sms")], DEFAULT)
    assert snapshot(state, NOW, DEFAULT)["closed_channels"] == {"sms": format_ms(NOW)}


@pytest.mark.parametrize(("order", "closed"), [
    (["unsubscribe@0", "resubscribe@1"], False),
    (["resubscribe@1", "unsubscribe@0"], False),  # the opt-in is newer, whatever the arrival order
    (["resubscribe@0", "unsubscribe@1"], True),
    (["unsubscribe@1", "resubscribe@0"], True),  # an older opt-in does not undo a newer opt-out
    (["unsubscribe@0", "resubscribe@1", "unsubscribe@2"], True),
])
def test_resubscribe_reopens_a_channel_the_customer_left_before(order: list[str], closed: bool) -> None:
    state = CustomerState("c1")
    events = [touch(0, NOW - DAY_MS, "sms")]
    for i, item in enumerate(order):
        kind, _, minute = item.partition("@")
        events.append(response(i, NOW + int(minute) * 60_000, kind, "sms"))
    feed(state, events, DEFAULT, now=NOW + 3 * 60_000)
    assert ("sms" in snapshot(state, NOW + 3 * 60_000, DEFAULT)["closed_channels"]) is closed


@pytest.mark.parametrize(("touches", "throttled"), [(4, False), (5, True)])
def test_unanswered_streak_edge(touches: int, throttled: bool) -> None:
    policy = only("unanswered_streak")
    state = CustomerState("c1")
    actions = feed(state, [touch(i, NOW - (10 - i) * HOUR_MS) for i in range(touches)], policy)
    assert [a["reasons"][0]["rule"] for a in actions] == (["unanswered_streak"] if throttled else [])


def test_any_response_ends_the_streak_and_the_throttle_lifts_after_its_minimum_length() -> None:
    policy = only("unanswered_streak")
    state = CustomerState("c1")
    feed(state, [touch(i, NOW - (10 - i) * HOUR_MS) for i in range(5)], policy)
    assert state.status == THROTTLED
    throttled_at = state.status_since_ms
    assert feed(state, [response(1, NOW, "open")], policy) == []  # cleared, but held for min_throttle (1d)
    assert snapshot(state, NOW, policy)["signals"] == {**snapshot(state, NOW, policy)["signals"], "active": [],
                                                       "unanswered_streak": 0}
    assert engine.next_due_ms(state, policy) <= throttled_at + DAY_MS  # a timer will look again in time
    assert engine.on_due(state, throttled_at + DAY_MS - 1, policy) == []
    (lifted,) = engine.on_due(state, throttled_at + DAY_MS, policy)
    assert lifted["type"] == "fatigue.recovered"
    assert lifted["reasons"][0]["rule"] == "unanswered_streak_cleared"


def test_re_engage_is_not_repeated_within_its_cooldown() -> None:
    policy = only("unanswered_streak")  # any single policy; cadence for prospects is 5 days
    state = CustomerState("c1")
    engine.apply_profile(state, {"stage": "prospect"}, NOW, policy)
    feed(state, [touch(1, NOW), response(1, NOW + HOUR_MS, "reply")], policy)
    overdue = 6 * DAY_MS + 1  # cadence 5 d + tolerance 1 d, strictly after
    (first,) = engine.on_due(state, NOW + overdue, policy)
    assert first["type"] == "fatigue.re_engage"
    touched = NOW + 6 * DAY_MS + HOUR_MS
    feed(state, [touch(2, touched)], policy, now=touched)  # touched: normal again
    assert engine.on_due(state, touched + overdue, policy) == []  # overdue again, 6 days after the ping
    assert state.status == "dormant"
    feed(state, [touch(3, NOW + 13 * DAY_MS)], policy, now=NOW + 13 * DAY_MS)
    (again,) = engine.on_due(state, NOW + 13 * DAY_MS + overdue, policy)  # 13 days after the first ping
    assert again["type"] == "fatigue.re_engage"


def conversation(state: CustomerState, latencies_h: list[float], policy: Policy, start: int) -> list[dict]:
    """One touch and its reply per entry, a day apart, replies after the given latency."""
    actions: list[dict] = []
    for i, hours in enumerate(latencies_h):
        at = start + i * DAY_MS
        n = at // DAY_MS  # unique ids across calls
        actions += feed(state, [touch(n, at), response(n, at + int(hours * HOUR_MS), "reply", to=f"t{n}")], policy,
                        now=at)
    return actions


@pytest.mark.parametrize(("recent_h", "fires"), [(1.9, False), (2.0, True), (5.0, True)])
def test_reply_latency_slowing_down_twofold_is_fatigue(recent_h: float, fires: bool) -> None:
    policy = only("reply_latency_slowdown")
    state = CustomerState("c1")
    start = NOW - 20 * DAY_MS
    actions = conversation(state, [1.0] * 6 + [recent_h] * 3, policy, start)
    assert [a["reasons"][0]["rule"] for a in actions] == (["reply_latency_slowdown"] if fires else [])
    if fires:
        assert actions[0]["reasons"][0]["observed"] == pytest.approx(recent_h, rel=0.01)
        assert actions[0]["reasons"][0]["threshold"] == 2.0


def test_reply_latency_needs_a_baseline_and_recovers_with_hysteresis() -> None:
    policy = only("reply_latency_slowdown")
    state = CustomerState("c1")
    start = NOW - 30 * DAY_MS
    assert conversation(state, [1.0] * 4 + [5.0] * 3, policy, start) == []  # 4 < 5 baseline samples
    state = CustomerState("c1")
    conversation(state, [1.0] * 6 + [3.0] * 3, policy, start)
    assert state.status == THROTTLED
    assert conversation(state, [1.6] * 3, policy, start + 10 * DAY_MS) == []  # x1.6: still above 1.5
    (lifted,) = conversation(state, [1.0] * 3, policy, start + 13 * DAY_MS)
    assert lifted["type"] == "fatigue.recovered"


def history(state: CustomerState, policy: Policy, answered: list[bool], kind: str) -> list[dict]:
    """One touch a day, each answered (with `kind`) or not, imported at NOW in one go; then a
    last unanswered touch 4 days later so that all of them have settled."""
    actions: list[dict] = []
    start = NOW - (len(answered) + 10) * DAY_MS
    for i, yes in enumerate(answered):
        at = start + i * DAY_MS
        events = [touch(i, at)] + ([response(i, at + HOUR_MS, kind, to=f"t{i}")] if yes else [])
        actions += feed(state, events, policy, now=NOW)
    return actions + feed(state, [touch(999, start + (len(answered) + 3) * DAY_MS)], policy, now=NOW)


@pytest.mark.parametrize(("silent", "fires"), [(2, False), (3, True)])
def test_response_rate_drop_against_own_baseline(silent: int, fires: bool) -> None:
    """Last 5 settled touches: 3 of 5 unanswered is a 60% drop from an always-answering baseline."""
    policy = only("response_rate_drop")
    state = CustomerState("c1")
    actions = history(state, policy, [True] * 12 + [False] * silent + [True] * (5 - silent), kind="reply")
    fired = [a for a in actions if a["type"] == "fatigue.throttle"]
    assert [a["reasons"][0]["rule"] for a in fired] == (["response_rate_drop"] if fires else [])


@pytest.mark.parametrize(("silent", "fires"), [(1, False), (2, True)])
def test_engagement_drop_of_15_percent(silent: int, fires: bool) -> None:
    """Opens on every touch, then 1 or 2 of the last 10 without: 10% stays, 20% fires (15% rule)."""
    policy = only("engagement_drop")
    state = CustomerState("c1")
    actions = history(state, policy, [True] * 10 + [True] * (10 - silent) + [False] * silent, kind="open")
    fired = [a for a in actions if a["type"] == "fatigue.throttle"]
    assert [a["reasons"][0]["rule"] for a in fired] == (["engagement_drop"] if fires else [])


def test_all_active_reasons_are_listed_and_status_changes_once() -> None:
    state = CustomerState("c1")
    actions = feed(state, [touch(i, NOW - (20 - i) * HOUR_MS) for i in range(13)], DEFAULT)
    # at the 5th touch; at the 13th an update naming the cap (more severe), not one per touch
    assert [(a["type"], a["previous_status"]) for a in actions] == [("fatigue.throttle", "normal"),
                                                                   ("fatigue.throttle", "throttled")]
    assert actions[0]["reasons"][0]["rule"] == "unanswered_streak"
    assert actions[1]["escalation"] == ["frequency_cap"]
    assert [r["rule"] for r in actions[1]["reasons"]] == ["frequency_cap", "unanswered_streak"]
    assert snapshot(state, NOW, DEFAULT)["signals"]["active"] == ["frequency_cap", "unanswered_streak"]
    assert state.status == THROTTLED
    feed(state, [response(1, NOW, "reply")], DEFAULT)
    assert state.status == THROTTLED  # the frequency cap still holds
    assert state.status != NORMAL


def test_signal_policy_errors_name_the_field() -> None:
    from services.errors import PolicyError

    with pytest.raises(PolicyError, match=r"reply_latency_slowdown: recover_factor \(3.0\) must be below"):
        parse_policy("signals:\n  reply_latency_slowdown: {recover_factor: 3.0}\n", "p")
