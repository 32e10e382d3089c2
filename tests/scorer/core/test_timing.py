"""re_engage says where and when the customer answers: their best channel and golden hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from services.durations import DAY_MS
from services.policy.model import default_policy

POLICY = default_policy()


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_re_engage_suggests_the_channel_and_local_hour_the_customer_answers() -> None:
    state = CustomerState("c1")
    thursday_0700_utc = datetime(2026, 9, 3, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
    engine.apply_profile(state, {"stage": "customer", "timezone": "Asia/Shanghai"}, ms(thursday_0700_utc), POLICY)
    events = []
    for week in range(4):
        touched = thursday_0700_utc + timedelta(weeks=week, hours=-3)
        events.append(ContactEvent(f"t{week}", "touch", "c1", "wecom", ms(touched), kind="value"))
        replied = thursday_0700_utc + timedelta(weeks=week, minutes=20)
        events.append(ContactEvent(f"r{week}", "response", "c1", "wecom", ms(replied), kind="reply"))
    events.append(ContactEvent("e", "touch", "c1", "email", ms(thursday_0700_utc + timedelta(days=22)), kind="value"))
    events.append(ContactEvent("o", "response", "c1", "email", ms(thursday_0700_utc + timedelta(days=22, hours=9)),
                               kind="open"))
    for event in events:
        engine.apply_event(state, event, event.occurred_at_ms, POLICY)
    due = engine.re_engage_due_ms(state, POLICY)
    assert due is not None
    actions = [a for a in engine.on_due(state, due, POLICY) if a["type"] == "fatigue.re_engage"]
    (action,) = actions
    assert action["best_channel"] == "wecom"
    assert action["best_time"] == {"local": "Thu 15:00", "timezone": "Asia/Shanghai"}
    assert "Reach out on wecom" in action["suggestion"] and "Thu 15:00 Asia/Shanghai" in action["suggestion"]


def test_no_suggestion_without_enough_answers() -> None:
    state = CustomerState("c1")
    start = 1_790_000_000_000
    engine.apply_event(state, ContactEvent("t", "touch", "c1", "email", start, kind="value"), start, POLICY)
    (action,) = engine.on_due(state, start + 32 * DAY_MS, POLICY)
    assert "best_channel" not in action and "best_time" not in action
