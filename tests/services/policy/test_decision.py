"""The pre-send decision, rule by rule, on snapshots the real core produces."""

from __future__ import annotations

import pytest

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.views import snapshot
from services.durations import DAY_MS, HOUR_MS
from services.policy.decision import ALLOW, DEFER, DENY, decide
from services.policy.model import default_policy, parse_policy

POLICY = default_policy()
NOW = 1_790_000_000_000


def build(events: list[tuple[str, str, float, str]], profile: dict | None = None) -> dict:
    """Snapshot after (type, channel, days_ago, kind) events, each touch answered unless it says so."""
    state = CustomerState("c1")
    if profile:
        engine.apply_profile(state, profile, NOW, POLICY)
    for i, (type_, channel, days_ago, kind) in enumerate(sorted(events, key=lambda e: -e[2])):
        at = NOW - int(days_ago * DAY_MS)
        engine.apply_event(state, ContactEvent(f"e{i}", type_, "c1", channel, at, kind=kind, producer="p"), NOW, POLICY)
    return snapshot(state, NOW, POLICY)


def engaged(n: int, days: float, channel: str = "phone") -> list[tuple[str, str, float, str]]:
    """n touches spread over `days` days, each followed by a reply (so no fatigue signal fires)."""
    out = []
    for i in range(n):
        ago = days - i * days / n
        out += [("touch", channel, ago, "value"), ("response", channel, ago - 0.01, "reply")]
    return out


def test_unknown_customer_is_allowed() -> None:
    assert decide(None, POLICY, "email", "promo", NOW).decision == ALLOW


@pytest.mark.parametrize(("kind", "expected"), [("promo", DENY), ("transactional", ALLOW)])
def test_do_not_contact(kind: str, expected: str) -> None:
    snap = build([], profile={"do_not_contact": True})
    assert decide(snap, POLICY, "email", kind, NOW).decision == expected


@pytest.mark.parametrize(("channel", "expected"), [("sms", DENY), ("phone", ALLOW)])
def test_unsubscribe_closes_only_that_channel(channel: str, expected: str) -> None:
    snap = build([("touch", "sms", 10, "promo"), ("response", "sms", 9, "unsubscribe")])
    assert decide(snap, POLICY, channel, "value", NOW).decision == expected


def test_cooling_off_defers_until_the_rest_ends() -> None:
    """An unanswered streak ends on a response, or after its rest (14 days without touches) from
    the throttle's start: that end is known."""
    snap = build([("touch", "email", 20 - i, "promo") for i in range(5)])  # unanswered streak of 5
    result = decide(snap, POLICY, "phone", "value", NOW)
    assert result.decision == DEFER and result.reasons[0]["rule"] == "throttled"
    assert result.reasons[0]["state"] == "cooling_off"
    assert result.next_allowed_ms == NOW + 14 * DAY_MS


def test_a_throttle_without_a_rest_has_no_known_end_and_says_why() -> None:
    policy = parse_policy("signals:\n  unanswered_streak: {rest: null}\n", "no-rest")
    state = CustomerState("c1")
    for i in range(5):
        engine.apply_event(state, ContactEvent(f"t{i}", "touch", "c1", "email", NOW - (20 - i) * DAY_MS,
                                               kind="promo"), NOW, policy)
    result = decide(snapshot(state, NOW, policy), policy, "phone", "value", NOW)
    assert result.decision == DEFER and result.next_allowed_ms is None
    assert "ends when the customer responds" in result.reasons[0]["detail"]


def test_one_more_touch_over_the_monthly_cap_is_deferred_until_one_leaves() -> None:
    snap = build(engaged(12, days=24))
    assert snap["status"] == "normal"
    result = decide(snap, POLICY, "phone", "value", NOW + 2 * DAY_MS)
    assert result.decision == DEFER
    assert [r["rule"] for r in result.reasons] == ["frequency_cap"]
    first_leaves = snap["frequency"]["leaves_at"][0]
    assert format_ms(result.next_allowed_ms) == first_leaves
    assert decide(snap, POLICY, "phone", "value", result.next_allowed_ms).decision == ALLOW


@pytest.mark.parametrize(("stage", "expected"), [("loyal", DEFER), ("prospect", ALLOW)])
def test_weekly_cap_per_stage(stage: str, expected: str) -> None:
    snap = build(engaged(1, days=2), profile={"stage": stage})  # loyal: 1 a week; prospect: 3
    result = decide(snap, POLICY, "email", "value", NOW)
    assert result.decision == expected
    if expected == DEFER:
        assert result.reasons[0]["rule"] == "weekly_cap"


def test_minimum_gap_per_channel() -> None:
    snap = build([("touch", "email", 2 / 24, "value"), ("response", "email", 1 / 24, "reply")])
    on_email = decide(snap, POLICY, "email", "value", NOW)
    assert on_email.decision == DEFER and on_email.reasons[0]["rule"] == "min_gap"
    assert on_email.next_allowed_ms == NOW - 2 * HOUR_MS + DAY_MS
    assert decide(snap, POLICY, "phone", "value", NOW).decision == ALLOW


def test_quiet_period_after_an_email_open_holds_sms() -> None:
    snap = build([("touch", "email", 3, "value"), ("response", "email", 1, "open")])
    result = decide(snap, POLICY, "sms", "value", NOW)
    assert result.decision == DEFER and result.reasons[0]["rule"] == "quiet_period"
    assert result.next_allowed_ms == NOW - DAY_MS + 3 * DAY_MS
    assert decide(snap, POLICY, "sms", "value", NOW + 2 * DAY_MS).decision == ALLOW


def test_entering_the_annoying_band_allows_with_a_warning() -> None:
    snap = build(engaged(8, days=28))
    result = decide(snap, POLICY, "phone", "value", NOW)
    assert result.decision == ALLOW
    assert [r["rule"] for r in result.reasons] == ["frequency_band_warning"]
    assert result.counts["counted_touches_30d"] == 8
