"""Issue 10's findings, each as the domain rule it breaks (DOMAIN.md), over a customer's whole life.

The histories run through the backtest's simulated clock (`scorer.backtest.simulate`): the same
core as the live scorer, with every due timer fired at its moment, so "what happens afterwards"
is seen exactly as a live scorer would see it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from scorer.backtest import ProfileChange, simulate
from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.views import snapshot
from services.contract import parse_rfc3339, to_ms
from services.durations import DAY_MS, HOUR_MS
from services.policy.decision import DEFER, decide
from services.policy.model import default_policy, parse_policy

POLICY = default_policy()
T0 = to_ms(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # a Monday


def touch(n: int, at: int, cid: str = "c1", channel: str = "phone", kind: str = "value") -> ContactEvent:
    return ContactEvent(f"t{n}", "touch", cid, channel, at, kind=kind, producer="p")


def answer(n: int, at: int, cid: str = "c1", channel: str = "phone", kind: str = "reply",
           to: str | None = None) -> ContactEvent:
    return ContactEvent(f"r{n}", "response", cid, channel, at, kind=kind, in_reply_to=to, producer="p")


def at_ms(action: dict) -> int:
    return to_ms(parse_rfc3339(action["at"]))


def replay(events: list[ContactEvent], profile: dict | None, until_ms: int, policy=POLICY):
    profiles = [ProfileChange(events[0].customer_id, profile)] if profile else []
    return simulate(events, profiles, policy, until_ms=until_ms).actions


# ---- 1. a throttle held by a rule only a response can clear must end after a rest ----


def test_1_streak_throttled_customer_left_alone_is_re_engaged_after_the_rest() -> None:
    """Five unanswered touches throttle (cool-off); the reps then leave the customer alone as asked.
    The throttle must not last forever: after the rest (14 days without touches) the customer moves
    to "to activate" with a re_engage that says it follows a rest."""
    events = [touch(i, T0 + i * DAY_MS) for i in range(5)]
    actions = replay(events, {"stage": "intent"}, T0 + 121 * DAY_MS)
    assert [a["type"] for a in actions][:2] == ["fatigue.throttle", "fatigue.re_engage"]
    re_engage = actions[1]
    last_touch = T0 + 4 * DAY_MS
    assert last_touch + 14 * DAY_MS <= at_ms(re_engage) <= last_touch + 15 * DAY_MS
    assert "rested 14 days" in re_engage["suggestion"]
    assert re_engage["status"] == "dormant"


def test_1_latency_throttled_customer_is_re_engaged_after_the_rest_not_months_later() -> None:
    events: list[ContactEvent] = []
    for i in range(9):  # replies after 1 h, then three after 5 h: twice as slow as usual
        at = T0 + i * DAY_MS
        events += [touch(i, at), answer(i, at + (1 if i < 6 else 5) * HOUR_MS, to=f"t{i}")]
    actions = replay(events, {"stage": "customer"}, T0 + 120 * DAY_MS)
    assert actions[0]["type"] == "fatigue.throttle"
    assert actions[0]["reasons"][0]["rule"] == "reply_latency_slowdown"
    after = [a for a in actions[1:] if a["type"] in ("fatigue.re_engage", "fatigue.recovered")]
    assert after, "the latency throttle never ended"
    slow_reply = T0 + 8 * DAY_MS + 5 * HOUR_MS
    assert at_ms(after[0]) <= slow_reply + 15 * DAY_MS


# ---- 2. the silence rule fires whatever the touch count ----


def test_2_no_response_for_90_days_fires_even_while_reps_keep_calling() -> None:
    """41 unanswered calls over 120 days: besides the streak throttle, the customer who never
    answers goes to "to activate" (rule no_response) once 90 days pass without any response."""
    events = [touch(i, T0 + i * 3 * DAY_MS) for i in range(41)]
    actions = replay(events, {"stage": "customer"}, T0 + 121 * DAY_MS)
    silent = [a for a in actions if any(r["rule"] == "no_response" for r in a["reasons"])]
    assert silent, [(a["type"], a["reasons"][0]["rule"]) for a in actions]
    assert at_ms(silent[0]) <= T0 + 91 * DAY_MS
    assert silent[0]["status"] == "dormant"


# ---- 3. "no touch for longer than the cadence": on cadence is not neglected ----


def test_3_a_customer_touched_exactly_on_cadence_is_never_re_engaged() -> None:
    """Intent stage, cadence 7 days; a touch every 7 days at the same hour, answered now and then."""
    events = []
    for week in range(10):
        at = T0 + week * 7 * DAY_MS
        events.append(touch(week, at))
        if week % 2 == 0:
            events.append(answer(week, at + HOUR_MS, to=f"t{week}"))
    actions = replay(events, {"stage": "intent"}, T0 + 9 * 7 * DAY_MS)
    assert [a for a in actions if a["type"] == "fatigue.re_engage"] == []


def test_3_the_cadence_timer_fires_strictly_after_cadence_plus_tolerance() -> None:
    events = [touch(0, T0), answer(0, T0 + HOUR_MS, to="t0")]
    actions = replay(events, {"stage": "intent"}, T0 + 20 * DAY_MS)
    (re_engage,) = [a for a in actions if a["type"] == "fatigue.re_engage"]
    assert at_ms(re_engage) > T0 + 7 * DAY_MS + 1 * DAY_MS  # cadence 7 d + tolerance 1 d
    assert at_ms(re_engage) <= T0 + 8 * DAY_MS + 1000


# ---- 4. the golden hour in the customer's own wall-clock time, across DST ----


def tuesday_replies(zone_by_week: list[str], first_tuesday: datetime) -> list[tuple[int, ContactEvent, str]]:
    """A touch at 08:00 and its reply at 09:00 local, every Tuesday, in the week's zone."""
    from zoneinfo import ZoneInfo

    out = []
    for week, zone in enumerate(zone_by_week):
        local = (first_tuesday + timedelta(weeks=week)).replace(tzinfo=ZoneInfo(zone))
        touched, replied = to_ms(local.replace(hour=8)), to_ms(local.replace(hour=9))
        out += [(touched, touch(week, touched, channel="email"), zone),
                (replied, answer(week, replied, channel="email", to=f"t{week}"), zone)]
    return out


@pytest.mark.parametrize(("first_tuesday", "zones"), [
    # 4 replies in winter time, 2 in summer time (spring forward 2026-03-08); re_engage in summer
    (datetime(2026, 2, 10), ["America/New_York"] * 6),
    # 4 in summer time, 2 in winter time (fall back 2026-11-01); re_engage in winter
    (datetime(2026, 10, 6), ["America/New_York"] * 6),
    # the customer moves from New York to London: still 09:00 on their own clock
    (datetime(2026, 5, 5), ["America/New_York"] * 4 + ["Europe/London"] * 2),
])
def test_4_replies_at_tuesday_9_local_give_tuesday_9_whatever_the_offset(
    first_tuesday: datetime, zones: list[str]
) -> None:
    steps = tuesday_replies(zones, first_tuesday)
    profiles = [ProfileChange("c1", {"stage": "customer", "timezone": zones[0]})]
    for previous, (at, _, zone) in itertools.pairwise(steps):
        if zone != previous[2]:
            profiles.append(ProfileChange("c1", {"stage": "customer", "timezone": zone}, at - HOUR_MS))
    last = steps[-1][0]
    actions = simulate([e for _, e, _ in steps], profiles, POLICY, until_ms=last + 40 * DAY_MS).actions
    (re_engage,) = [a for a in actions if a["type"] == "fatigue.re_engage"]
    assert re_engage["best_time"] == {"local": "Tue 09:00", "timezone": zones[-1]}


# ---- 5. the best channel is never a closed one ----


def test_5_after_an_email_unsubscribe_the_re_engage_names_the_best_open_channel() -> None:
    events = []
    for i in range(6):  # email opened every time: email is where they answer most ...
        at = T0 + i * DAY_MS
        events += [touch(i, at, channel="email"), answer(i, at + HOUR_MS, channel="email", kind="open", to=f"t{i}")]
    for i in range(3):  # ... and SMS answered three times
        at = T0 + (7 + i) * DAY_MS
        events += [touch(10 + i, at, channel="sms"), answer(10 + i, at + HOUR_MS, channel="sms", to=f"t{10 + i}")]
    events.append(answer(99, T0 + 11 * DAY_MS, channel="email", kind="unsubscribe"))
    actions = replay(events, {"stage": "prospect"}, T0 + 30 * DAY_MS)
    (re_engage,) = [a for a in actions if a["type"] == "fatigue.re_engage"][:1]
    assert re_engage.get("best_channel") == "sms"
    assert "sms" in re_engage["suggestion"] and "email" not in re_engage["suggestion"].split("Reach out")[-1]


# ---- 6. decisions say when a known end is ----


def test_6_a_frequency_throttle_defers_until_its_known_end() -> None:
    policy = parse_policy("signals:\n  unanswered_streak: {enabled: false}\n", "cap-only")
    state = CustomerState("c1")
    now = T0 + 29 * DAY_MS
    for i in range(13):
        at = T0 + i * 2 * DAY_MS
        engine.apply_event(state, touch(i, at), now, policy)
        engine.apply_event(state, answer(i, at + HOUR_MS, to=f"t{i}"), now, policy)
    assert state.status == "throttled"
    result = decide(snapshot(state, now, policy), policy, "email", "value", now)
    assert result.decision == DEFER
    # the throttle lifts when the counted touches are back to 8 (and not before its minimum length)
    pause = max(engine.pause_until_ms(state, now, policy), state.status_since_ms + policy.min_throttle_ms)
    assert result.next_allowed_ms == pause
    assert result.reasons[0]["until"] == format_ms(pause)
    assert decide(snapshot(state, now, policy), policy, "email", "value", pause).decision != DEFER


def test_6_a_complaint_cool_off_defers_until_it_ends() -> None:
    state = CustomerState("c1")
    engine.apply_event(state, touch(0, T0), T0, POLICY)
    engine.apply_event(state, answer(0, T0 + HOUR_MS, kind="complaint"), T0 + HOUR_MS, POLICY)
    now = T0 + 2 * DAY_MS
    result = decide(snapshot(state, now, POLICY), POLICY, "phone", "value", now)
    assert result.decision == DEFER
    assert result.next_allowed_ms == T0 + HOUR_MS + 30 * DAY_MS


# ---- 7. escalation: a throttled customer being flooded gets an update naming the cap ----


def test_7_a_streak_throttled_customer_flooded_past_the_cap_gets_an_update_naming_it() -> None:
    events = [touch(i, T0 + i * 6 * HOUR_MS) for i in range(63)]  # 63 calls in under 16 days
    actions = replay(events, {"stage": "customer"}, T0 + 16 * DAY_MS)
    throttles = [a for a in actions if a["type"] == "fatigue.throttle"]
    assert throttles[0]["reasons"][0]["rule"] == "unanswered_streak"
    named_cap = [a for a in throttles[1:] if any(r["rule"] == "frequency_cap" for r in a["reasons"])]
    assert named_cap, "no alert ever named the frequency cap"
    assert named_cap[0]["counts"]["30d"]["counted_touches"] == 13
    assert any(r["rule"] == "unanswered_streak" for r in named_cap[0]["reasons"])  # all active reasons
    assert len(throttles) <= 3  # the start, the cap, the cap 2x: at most one per rule per cooldown


# ---- 8. one situation, one message ----


def test_8_a_throttle_lifting_into_neglect_is_one_message() -> None:
    policy = parse_policy("signals:\n  unanswered_streak: {enabled: false}\n", "cap-only")
    events = []
    for i in range(13):  # 13 answered touches in 4 days, then nothing
        at = T0 + i * 8 * HOUR_MS
        events += [touch(i, at), answer(i, at + HOUR_MS, to=f"t{i}")]
    actions = replay(events, {"stage": "intent"}, T0 + 60 * DAY_MS, policy)
    moments = [at_ms(a) for a in actions]
    assert len(moments) == len(set(moments)), [(a["type"], a["at"]) for a in actions]
    lift = next(a for a in actions if a["previous_status"] == "throttled")
    assert lift["type"] == "fatigue.re_engage" and lift["status"] == "dormant"
    assert "ecovered" in lift["suggestion"] and "last touch" in lift["suggestion"]


def test_8_a_complaint_cool_off_ending_in_neglect_is_one_message() -> None:
    events = [touch(0, T0), answer(0, T0 + HOUR_MS, kind="complaint")]
    actions = replay(events, {"stage": "intent"}, T0 + 40 * DAY_MS)
    moments = [at_ms(a) for a in actions]
    assert len(moments) == len(set(moments)), [(a["type"], a["at"]) for a in actions]
