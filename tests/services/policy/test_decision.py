"""The pre-send decision, rule by rule, on snapshots the real core produces."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.views import snapshot
from services.contract import to_ms
from services.durations import DAY_MS, HOUR_MS
from services.policy.decision import ALLOW, DEFER, DENY, Decision, decide, deciding_rule
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


# ---- quiet hours in the customer's local time ----

SHANGHAI_1300 = to_ms(datetime(2026, 11, 23, 13, 0, tzinfo=ZoneInfo("Asia/Shanghai")))


def local_snapshot(timezone: str | None, now: int, events: list[tuple[str, str, int, str]] | None = None) -> dict:
    state = CustomerState("c1")
    engine.apply_profile(state, {"stage": "customer", **({"timezone": timezone} if timezone else {})}, now, POLICY)
    for i, (type_, channel, at, kind) in enumerate(events or []):
        engine.apply_event(state, ContactEvent(f"e{i}", type_, "c1", channel, at, kind=kind, producer="p"), now, POLICY)
    return snapshot(state, now, POLICY)


@pytest.mark.parametrize(("channel", "expected"), [("sms", DEFER), ("push", DEFER), ("phone", DEFER),
                                                   ("email", ALLOW), ("wecom", ALLOW)])
def test_no_push_sms_or_phone_over_lunch_in_the_customers_time(channel: str, expected: str) -> None:
    snap = local_snapshot("Asia/Shanghai", SHANGHAI_1300)
    result = decide(snap, POLICY, channel, "value", SHANGHAI_1300)
    assert result.decision == expected
    if expected == DEFER:
        assert result.reasons == [{"rule": "quiet_hours", "channel": channel, "window": "12:00-13:30",
                                   "timezone": "Asia/Shanghai",
                                   "detail": f"no {channel} 12:00-13:30 in the customer's local time (Asia/Shanghai)"}]
        assert result.next_allowed_ms == SHANGHAI_1300 + 30 * 60_000


def test_customers_without_a_time_zone_are_not_held_by_quiet_hours() -> None:
    assert decide(local_snapshot(None, SHANGHAI_1300), POLICY, "sms", "value", SHANGHAI_1300).decision == ALLOW


def test_a_minimum_gap_ending_at_night_is_allowed_in_the_morning_across_dst() -> None:
    """A phone touch at 21:30 New York the evening before the clocks go forward: its 1-day gap ends
    at 21:30 the next evening, inside the night's quiet hours — so the next allowed moment is 08:00
    the morning after, in summer time by then."""
    ny = ZoneInfo("America/New_York")
    touched = to_ms(datetime(2026, 3, 7, 21, 30, tzinfo=ny))
    now = touched + HOUR_MS
    snap = local_snapshot("America/New_York", now, [("touch", "phone", touched, "value")])
    result = decide(snap, POLICY, "phone", "value", now)
    assert result.decision == DEFER and {r["rule"] for r in result.reasons} == {"min_gap", "quiet_hours"}
    assert result.next_allowed_ms == to_ms(datetime(2026, 3, 9, 8, 0, tzinfo=ny))  # summer time by then
    assert decide(snap, POLICY, "phone", "value", result.next_allowed_ms).decision == ALLOW


# ---- no two teams touching for the same thing ----


def campaign_snapshot(now: int) -> dict:
    state = CustomerState("c1")
    at = now - 2 * DAY_MS
    engine.apply_event(state, ContactEvent("t1", "touch", "c1", "email", at, kind="promo", rep_id="alice",
                                           campaign_id="spring-sale", producer="p"), now, POLICY)
    engine.apply_event(state, ContactEvent("r1", "response", "c1", "email", at + HOUR_MS, kind="open",
                                           producer="p"), now, POLICY)
    return snapshot(state, now, POLICY)


def test_a_second_touch_of_the_same_campaign_is_denied_with_the_earlier_touch() -> None:
    snap = campaign_snapshot(NOW)
    result = decide(snap, POLICY, "phone", "promo", NOW, campaign_id="spring-sale")
    assert result.decision == DENY
    (reason,) = result.reasons
    assert reason["rule"] == "same_campaign" and reason["window"] == "7d"
    assert reason["earlier_touch"] == {"at": format_ms(NOW - 2 * DAY_MS), "rep_id": "alice", "channel": "email"}
    assert "alice" in reason["detail"] and format_ms(NOW - 2 * DAY_MS) in reason["detail"]
    assert result.next_allowed_ms == NOW - 2 * DAY_MS + 7 * DAY_MS
    assert decide(snap, POLICY, "phone", "promo", NOW, campaign_id="winter").decision == ALLOW
    assert decide(snap, POLICY, "phone", "promo", NOW).decision == ALLOW
    assert decide(snap, POLICY, "phone", "promo", NOW + 5 * DAY_MS, campaign_id="spring-sale").decision == ALLOW


def test_the_campaign_rule_can_be_switched_off() -> None:
    policy = parse_policy("sending:\n  same_campaign_gap: null\n", "off")
    snap = campaign_snapshot(NOW)
    assert decide(snap, policy, "phone", "promo", NOW, campaign_id="spring-sale").decision == ALLOW


def test_campaigns_kept_are_bounded_and_only_within_the_gap() -> None:
    state = CustomerState("c1")
    for i in range(80):
        at = NOW - (79 - i) * HOUR_MS
        engine.apply_event(state, ContactEvent(f"t{i}", "touch", "c1", "email", at, kind="promo", campaign_id=f"k{i}",
                                               producer="p"), at, POLICY)
    assert len(state.campaigns) == 50 and "k79" in state.campaigns and "k0" not in state.campaigns
    later = NOW + 8 * DAY_MS
    engine.apply_event(state, ContactEvent("x", "touch", "c1", "email", later, kind="promo", campaign_id="new",
                                           producer="p"), later, POLICY)
    assert list(state.campaigns) == ["new"]


def test_more_touches_than_the_snapshot_lists_are_all_counted() -> None:
    """The snapshot lists the leave times of its first 50 touches only; a policy with a cap above 50
    must still see all 70 (and say when enough have left: the known 20th leave time)."""
    policy = parse_policy("frequency:\n  throttle_above: 60\n  recover_at_or_below: 40\n", "high-cap")
    state = CustomerState("c1")
    for i in range(70):  # 70 answered touches over the last 28 days
        at = NOW - int((28 - i * 0.4) * DAY_MS)
        engine.apply_event(state, ContactEvent(f"t{i}", "touch", "c1", "phone", at, kind="value", producer="p"),
                           NOW, policy)
        engine.apply_event(state, ContactEvent(f"r{i}", "response", "c1", "phone", at + 60_000, kind="reply",
                                               producer="p"), NOW, policy)
    snap = snapshot(state, NOW, policy)
    assert snap["frequency"]["counted_touches"] == 70 and len(snap["frequency"]["leaves_at"]) == 50
    result = decide(snap, policy, "email", "value", NOW)
    assert result.counts["counted_touches_30d"] == 70
    cap = next(r for r in result.reasons if r["rule"] == "frequency_cap")
    assert cap["observed"] == 70 and cap["threshold"] == 60
    # 11 must leave before one more fits under 60: the cap holds until the 11th listed leave time
    eleventh = to_ms_text(snap["frequency"]["leaves_at"][10])
    assert frequency_cap(decide(snap, policy, "email", "value", eleventh - 1)) == (60, 60)
    assert frequency_cap(decide(snap, policy, "email", "value", eleventh)) is None
    later = to_ms_text(snap["frequency"]["leaves_at"][29])
    assert decide(snap, policy, "email", "value", later).counts["counted_touches_30d"] == 40


def test_a_shorter_frequency_window_since_the_snapshot_counts_by_the_new_window() -> None:
    """PUT /v1/policy changes the frequency window; until the scorer rewrites a customer's snapshot
    the decision shifts its leave times to the new window instead of counting by the old one."""
    snap = build([("touch", "phone", d, "value") for d in (25, 20, 16, 12, 9, 6, 3, 1)]
                 + [("response", "phone", d - 0.01, "reply") for d in (25, 20, 16, 12, 9, 6, 3, 1)])
    assert snap["frequency"]["window"] == "30d" and snap["frequency"]["counted_touches"] == 8
    two_weeks = parse_policy("windows: [24h, 7d, 14d, 30d, 90d]\nfrequency:\n  window: 14d\n  throttle_above: 4\n"
                             "  recover_at_or_below: 2\n", "14d")
    result = decide(snap, two_weeks, "phone", "value", NOW)
    assert result.counts["counted_touches_30d"] == 5  # the touches of 12, 9, 6, 3 and 1 days ago
    cap = next(r for r in result.reasons if r["rule"] == "frequency_cap")
    assert (cap["observed"], cap["threshold"], cap["window"]) == (5, 4, "14d")
    # the touch of 12 days ago leaves the 14-day window 2 days from now (an hour bucket: up to an
    # hour later; by the old 30-day window, 18 days from now), the one of 9 days ago in 5 days: then
    # one more fits under 4
    assert frequency_cap(decide(snap, two_weeks, "phone", "value", NOW + 2 * DAY_MS - 1)) == (5, 4)
    assert frequency_cap(decide(snap, two_weeks, "phone", "value", NOW + 2 * DAY_MS + HOUR_MS)) == (4, 4)
    assert frequency_cap(decide(snap, two_weeks, "phone", "value", NOW + 5 * DAY_MS - 1)) == (4, 4)
    assert frequency_cap(decide(snap, two_weeks, "phone", "value", NOW + 5 * DAY_MS + HOUR_MS)) is None
    assert NOW + 5 * DAY_MS <= result.next_allowed_ms <= NOW + 5 * DAY_MS + HOUR_MS


def frequency_cap(result) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """(observed, threshold) of the decision's frequency_cap reason, None when the cap does not hold."""
    found = [r for r in result.reasons if r["rule"] == "frequency_cap"]
    return (found[0]["observed"], found[0]["threshold"]) if found else None


def to_ms_text(text: str) -> int:
    return to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def decision_of(outcome: str, *rules: str) -> Decision:
    return Decision(outcome, [{"rule": rule} for rule in rules])


# ---- the rule that decided: the bounded `rule` label of fatigue_api_decisions_total ----


def test_every_rule_a_decision_can_name_is_a_bounded_label_value() -> None:
    import ast
    import inspect

    from services.policy import decision

    named = {node.values[index].value for node in ast.walk(ast.parse(inspect.getsource(decision)))
             if isinstance(node, ast.Dict) for index, key in enumerate(node.keys)
             if isinstance(key, ast.Constant) and key.value == "rule" and isinstance(node.values[index], ast.Constant)}
    assert len(named) >= 8, "the scan found too few reasons to mean anything"
    bounded = {rule for rules in decision.DECIDING_RULES.values() for rule in rules}
    assert named <= bounded, f"rules a reason can name but the metric does not know: {sorted(named - bounded)}"


@pytest.mark.parametrize(
    ("result", "rule"),
    [
        (decision_of(ALLOW), "none"),
        (decision_of(ALLOW, "frequency_band_warning"), "frequency_band_warning"),
        (decision_of(DENY, "channel_closed", "same_campaign"), "channel_closed"),
        (decision_of(DEFER, "quiet_hours"), "quiet_hours"),
        (decision_of(DEFER, "do_not_contact"), "other"),  # not a rule that defers: never a new label value
        (decision_of(DEFER, "made-up"), "other"),
    ],
)
def test_the_deciding_rule_is_the_first_reason_of_a_known_rule(result: Decision, rule: str) -> None:
    assert deciding_rule(result) == rule
