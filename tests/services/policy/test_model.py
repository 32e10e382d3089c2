from __future__ import annotations

from pathlib import Path

import pytest

from services.durations import DAY_MS, HOUR_MS, parse_duration_ms
from services.errors import PolicyError
from services.policy.model import default_policy, parse_policy

PACKAGED = Path(__file__).parents[3] / "services" / "policy" / "policy.yaml"


def test_packaged_policy_is_the_domain_default() -> None:
    policy = parse_policy(PACKAGED.read_text(), "policy.yaml")
    assert policy == default_policy()
    assert policy.throttle_above == 12 and policy.recover_at_or_below == 8
    assert policy.cadence_ms("prospect") == 5 * DAY_MS
    assert policy.cadence_ms("loyal") == 90 * DAY_MS
    assert policy.cadence_ms(None) == 30 * DAY_MS


@pytest.mark.parametrize(
    ("text", "duration_ms"),
    [("90s", 90_000), ("30m", 30 * 60_000), ("24h", 24 * HOUR_MS), ("7d", 7 * DAY_MS), ("2w", 14 * DAY_MS)],
)
def test_durations(text: str, duration_ms: int) -> None:
    assert parse_duration_ms(text) == duration_ms


@pytest.mark.parametrize("text", ["", "7", "d7", "7 days", "-1d", "0d", "1.5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("frequency:\n  throttle_above: 5\n  recover_at_or_below: 9\n", r"p\.yaml:2: frequency: .*flap"),
        ("windows: [24h, 7x]\n", r"p\.yaml:1: windows: '7x' is not a duration"),
        ("cadence:\n  by_stage:\n    lead: 3x\n", r"p\.yaml:3: cadence\.by_stage: lead: '3x'"),
        ("cadence:\n  by_stage:\n    whale: 3d\n", r"cadence\.by_stage\.whale"),
        ("frequency:\n  windw: 30d\n", r"p\.yaml:2: frequency\.windw: Extra inputs"),
        ("frequency:\n  window: 14d\n", r"frequency\.window '14d' must be one of windows"),
        ("version: 2\n", r"version 2 is not supported"),
        ("a: [\n", r"p\.yaml:2: not valid YAML"),
        ("- 1\n", r"must be a mapping"),
    ],
)
def test_invalid_policy_names_line_and_reason(document: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected):
        parse_policy(document, "p.yaml")
