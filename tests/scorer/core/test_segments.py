"""Segments by tier x stage override the defaults; the most specific segment applies."""

from __future__ import annotations

import pytest

from scorer.core import engine
from scorer.core.state import THROTTLED, ContactEvent, CustomerState
from scorer.core.views import snapshot
from services.durations import DAY_MS
from services.errors import PolicyError
from services.policy.decision import decide
from services.policy.model import parse_policy

POLICY = parse_policy(
    """
signals:
  unanswered_streak: {enabled: false}
cadence:
  silence: 365d
segments:
  - {tier: A, frequency: {throttle_above: 20, recover_at_or_below: 15}}
  - {tier: A, stage: loyal, cadence: 120d}
  - {stage: prospect, frequency: {throttle_above: 6, recover_at_or_below: 3}, weekly_cap: 1}
""",
    "segments",
)
NOW = 1_790_000_000_000


def touched(profile: dict, n: int) -> CustomerState:
    state = CustomerState("c1")
    engine.apply_profile(state, profile, NOW, POLICY)
    for i in range(n):
        at = NOW - (25 - i) * DAY_MS
        engine.apply_event(state, ContactEvent(f"t{i}", "touch", "c1", "phone", at, kind="value"), NOW, POLICY)
    return state


@pytest.mark.parametrize(
    ("profile", "touches", "throttled"),
    [
        ({"tier": "A", "stage": "customer"}, 13, False),  # tier A: cap 20
        ({"tier": "A", "stage": "customer"}, 21, True),
        ({"tier": "B", "stage": "customer"}, 13, True),  # default cap 12
        ({"tier": "B", "stage": "prospect"}, 7, True),  # prospect: cap 6
        ({"tier": "A", "stage": "prospect"}, 7, True),  # stage-only beats tier-only
        ({"tier": "A", "stage": "loyal"}, 13, True),  # A/loyal changes cadence only: default cap again
    ],
)
def test_the_most_specific_segment_sets_the_cap(profile: dict, touches: int, throttled: bool) -> None:
    assert (touched(profile, touches).status == THROTTLED) is throttled


def test_segment_cadence_and_weekly_cap() -> None:
    loyal = touched({"tier": "A", "stage": "loyal"}, 1)
    tolerance = DAY_MS  # strictly after last touch + cadence + cadence.tolerance
    assert engine.re_engage_due_ms(loyal, POLICY) == NOW - 25 * DAY_MS + 120 * DAY_MS + tolerance + 1
    prospect = touched({"stage": "prospect"}, 0)
    engine.apply_event(prospect, ContactEvent("x", "touch", "c1", "phone", NOW - 2 * DAY_MS, kind="value"), NOW, POLICY)
    result = decide(snapshot(prospect, NOW, POLICY), POLICY, "email", "value", NOW)
    assert result.decision == "defer" and result.reasons[0] == {"rule": "weekly_cap", "window": "7d", "observed": 1,
                                                               "threshold": 1}


def test_moving_into_a_stricter_segment_throttles_on_the_profile_change() -> None:
    state = touched({"tier": "B", "stage": "customer"}, 7)
    actions = engine.apply_profile(state, {"tier": "B", "stage": "prospect"}, NOW, POLICY)
    assert [a["type"] for a in actions] == ["fatigue.throttle"]
    assert actions[0]["reasons"][0]["threshold"] == 6


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("segments:\n  - {frequency: {throttle_above: 3}}\n", r"segments\.0: a segment needs a tier, a stage"),
        ("segments:\n  - {tier: A, frequency: {throttle_above: 5}}\n", r"segments\[0\]: recover_at_or_below \(8\)"),
        ("segments:\n  - {tier: A}\n  - {tier: A}\n", r"segments\[1\] repeats tier A"),
        ("segments:\n  - {tier: Z}\n", r"segments\.0\.tier"),
        ("segments:\n  - {stage: lead, cadence: soon}\n", r"segments\.0\.cadence: 'soon' is not a duration"),
    ],
)
def test_invalid_segments_are_refused_with_the_reason(document: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected):
        parse_policy(document, "p")
