"""The fatigue rules, edge by edge, on the pure core (no infrastructure)."""

from __future__ import annotations

import copy

import pytest

from scorer.core import engine
from scorer.core.state import DORMANT, NORMAL, THROTTLED, ContactEvent, CustomerState
from scorer.core.views import snapshot
from services.durations import DAY_MS, HOUR_MS
from services.policy.model import parse_policy

# The frequency and cadence rules alone; the response-aware signals have their own tests.
POLICY = parse_policy(
    """
signals:
  complaint: {enabled: false}
  unanswered_streak: {enabled: false}
  reply_latency_slowdown: {enabled: false}
  response_rate_drop: {enabled: false}
  engagement_drop: {enabled: false}
""",
    "frequency-only",
)
NOW = 1_790_000_000_000


def touch(i: int, at: int, channel: str = "email", kind: str | None = "promo", cid: str = "c1") -> ContactEvent:
    return ContactEvent(f"t{i}", "touch", cid, channel, at, kind=kind, producer="crm")


def response(i: int, at: int, kind: str = "reply", channel: str = "email", in_reply_to: str | None = None):
    return ContactEvent(f"r{i}", "response", "c1", channel, at, kind=kind, in_reply_to=in_reply_to, producer="crm")


def feed(state: CustomerState, events: list[ContactEvent], now: int = NOW) -> list[dict]:
    actions: list[dict] = []
    for event in events:
        actions += engine.apply_event(state, event, now, POLICY).actions
    return actions


def spread(n: int, days: int = 29, kind: str | None = "promo") -> list[ContactEvent]:
    """n touches spread evenly over the last `days` days, oldest first."""
    return [touch(i, NOW - days * DAY_MS + i * (days * DAY_MS // max(n, 1)), kind=kind) for i in range(n)]


@pytest.mark.parametrize(("touches", "status", "actions"), [(12, NORMAL, []), (13, THROTTLED, ["fatigue.throttle"])])
def test_throttle_edge(touches: int, status: str, actions: list[str]) -> None:
    state = CustomerState("c1")
    emitted = feed(state, spread(touches))
    assert [a["type"] for a in emitted] == actions
    assert state.status == status


def test_throttle_carries_reasons_and_pause_until() -> None:
    state = CustomerState("c1")
    (action,) = feed(state, spread(13))
    assert action["reasons"] == [{"rule": "frequency_cap", "window": "30d", "observed": 13, "threshold": 12}]
    assert action["previous_status"] == NORMAL and action["status"] == THROTTLED
    assert action["counts"]["30d"]["counted_touches"] == 13
    until = engine.pause_until_ms(state, NOW, POLICY)
    assert until > NOW
    # Exactly at pause_until the counted touches are back to the recovery level.
    assert engine.counted_touches(state, until, POLICY) <= 8 < engine.counted_touches(state, until - 1, POLICY)


def test_emitted_once_per_state_change_not_per_event() -> None:
    state = CustomerState("c1")
    assert len(feed(state, spread(20))) == 1


def test_transactional_touches_do_not_count_toward_the_cap() -> None:
    state = CustomerState("c1")
    assert feed(state, spread(20, kind="transactional")) == []
    assert snapshot(state, NOW, POLICY)["windows"]["30d"]["touches"]["total"] == 20
    assert snapshot(state, NOW, POLICY)["frequency"]["counted_touches"] == 0


@pytest.mark.parametrize(("remaining", "recovered"), [(9, False), (8, True)])
def test_recovery_edge_with_hysteresis(remaining: int, recovered: bool) -> None:
    """Throttled at 13; the throttle lifts only when the count falls to 8, not at 12 or 9."""
    state = CustomerState("c1")
    events = [touch(i, NOW - 20 * DAY_MS + i * HOUR_MS) for i in range(13 - remaining)]
    events += [touch(100 + i, NOW - i * HOUR_MS) for i in range(remaining)]
    feed(state, events)
    assert state.status == THROTTLED
    later = NOW + 11 * DAY_MS  # the first batch has left the 30-day window, the second has not
    actions = engine.on_due(state, later, POLICY)
    assert [a["type"] for a in actions] == (["fatigue.recovered"] if recovered else [])
    assert state.status == (NORMAL if recovered else THROTTLED)


def test_duplicates_never_count_twice() -> None:
    state = CustomerState("c1")
    first = engine.apply_event(state, touch(1, NOW), NOW, POLICY)
    again = engine.apply_event(state, touch(1, NOW), NOW, POLICY)
    assert (first.result, again.result) == (engine.COUNTED, engine.DUPLICATE)
    assert engine.counted_touches(state, NOW, POLICY) == 1


def test_same_event_id_from_another_producer_is_another_event() -> None:
    state = CustomerState("c1")
    engine.apply_event(state, touch(1, NOW), NOW, POLICY)
    other = ContactEvent("t1", "touch", "c1", "email", NOW, kind="promo", producer="campaigns")
    assert engine.apply_event(state, other, NOW, POLICY).result == engine.COUNTED


def test_late_events_beyond_grace_are_ignored() -> None:
    state = CustomerState("c1")
    engine.apply_event(state, touch(1, NOW), NOW, POLICY)
    late = engine.apply_event(state, touch(2, NOW - 8 * DAY_MS), NOW, POLICY)
    in_grace = engine.apply_event(state, touch(3, NOW - 6 * DAY_MS), NOW, POLICY)
    assert (late.result, in_grace.result) == (engine.LATE, engine.COUNTED)
    assert engine.counted_touches(state, NOW, POLICY) == 2


def test_reply_latency_uses_in_reply_to_else_latest_touch_on_channel() -> None:
    state = CustomerState("c1")
    feed(state, [touch(1, NOW - 10 * HOUR_MS), touch(2, NOW - 4 * HOUR_MS), touch(3, NOW - 3 * HOUR_MS, "sms")])
    feed(state, [response(1, NOW - 2 * HOUR_MS, in_reply_to="t1")])  # 8 h after t1
    feed(state, [response(2, NOW - 1 * HOUR_MS)])  # latest email touch before it is t2: 3 h
    feed(state, [response(3, NOW, kind="open")])  # opens are not replies
    view = snapshot(state, NOW, POLICY)["reply_latency"]
    assert view == {"last_s": 3 * 3600, "median_s": 5.5 * 3600, "samples": 2}


@pytest.mark.parametrize(
    ("stage", "idle_ms", "fires", "rule"),
    [
        ("prospect", 5 * DAY_MS, False, None),
        ("prospect", 6 * DAY_MS, False, None),  # cadence 5 d + tolerance 1 d: not yet, "longer than" is strict
        ("prospect", 6 * DAY_MS + 1, True, "cadence_overdue"),
        ("customer", 31 * DAY_MS + 1, True, "cadence_overdue"),
        (None, 31 * DAY_MS + 1, True, "cadence_overdue"),
        # loyal: cadence 90 d + 1 d, but 90 days without any response come first (cadence.silence)
        ("loyal", 90 * DAY_MS - 1, False, None),
        ("loyal", 90 * DAY_MS, True, "no_response"),
    ],
)
def test_re_engage_follows_the_stage_cadence(stage: str | None, idle_ms: int, fires: bool, rule: str | None) -> None:
    state = CustomerState("c1")
    if stage:
        engine.apply_profile(state, {"stage": stage}, NOW, POLICY)
    feed(state, [touch(1, NOW)])
    due = engine.next_due_ms(state, POLICY)
    assert due is not None
    actions = engine.on_due(state, NOW + idle_ms, POLICY)
    assert [a["type"] for a in actions] == (["fatigue.re_engage"] if fires else [])
    if fires:
        assert actions[0]["reasons"][0]["rule"] == rule
        assert state.status == DORMANT
        assert engine.on_due(state, NOW + 2 * idle_ms, POLICY) == []  # once, not every tick


def test_do_not_contact_is_never_re_engaged() -> None:
    state = CustomerState("c1")
    engine.apply_profile(state, {"stage": "prospect", "do_not_contact": True}, NOW, POLICY)
    feed(state, [touch(1, NOW)])
    assert engine.re_engage_due_ms(state, POLICY) is None
    assert engine.on_due(state, NOW + 60 * DAY_MS, POLICY) == []


def test_a_touch_wakes_a_dormant_customer_silently() -> None:
    state = CustomerState("c1")
    feed(state, [touch(1, NOW)])
    engine.on_due(state, NOW + 32 * DAY_MS, POLICY)
    assert state.status == DORMANT
    assert feed(state, [touch(2, NOW + 32 * DAY_MS)], now=NOW + 32 * DAY_MS) == []
    assert state.status == NORMAL


def test_action_ids_are_deterministic_for_a_replay_from_the_same_state() -> None:
    state = CustomerState("c1")
    feed(state, spread(12))
    replay = copy.deepcopy(state)
    (first,) = feed(state, [touch(99, NOW)])
    (second,) = feed(replay, [touch(99, NOW)])
    assert first["action_id"] == second["action_id"]


def test_state_survives_a_json_round_trip() -> None:
    state = CustomerState("c1")
    engine.apply_profile(state, {"tier": "A", "stage": "customer"}, NOW, POLICY)
    feed(state, [*spread(13), response(1, NOW, in_reply_to="t12")])
    again = CustomerState.from_json(state.to_json())
    assert snapshot(again, NOW + DAY_MS, POLICY) == snapshot(state, NOW + DAY_MS, POLICY)
    assert engine.next_due_ms(again, POLICY) == engine.next_due_ms(state, POLICY)


def test_a_silent_customer_goes_dormant_even_while_touched_and_wakes_on_an_answer() -> None:
    state = CustomerState("c1")
    engine.apply_profile(state, {"stage": "customer"}, NOW - 100 * DAY_MS, POLICY)
    for week in range(14):  # touched every week, never answers
        at = NOW - 100 * DAY_MS + week * 7 * DAY_MS
        engine.apply_event(state, touch(week, at, kind="value"), at, POLICY)
    due = engine.re_engage_due_ms(state, POLICY)
    assert due == NOW - 100 * DAY_MS + 90 * DAY_MS  # 90 days after we first heard of them
    (action,) = engine.on_due(state, due, POLICY)
    assert action["type"] == "fatigue.re_engage" and [r["rule"] for r in action["reasons"]] == ["no_response"]
    assert "Gone quiet" in action["suggestion"]
    engine.apply_event(state, touch(99, due + DAY_MS, kind="value"), due + DAY_MS, POLICY)
    assert state.status == DORMANT  # another touch does not end the customer's silence
    engine.apply_event(state, ContactEvent("r1", "response", "c1", "email", due + 2 * DAY_MS, kind="reply"),
                       due + 2 * DAY_MS, POLICY)
    assert state.status == NORMAL  # an answer does
