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


# ---- the lifecycle and sending knobs (issue 10) ----


def test_lifecycle_and_sending_defaults() -> None:
    policy = default_policy()
    assert policy.cadence_tolerance_ms == DAY_MS and policy.escalation_factor == 2.0
    assert policy.throttle_update_cooldown_ms == 7 * DAY_MS
    assert {r: policy.signals.rest_ms(r) for r in ("unanswered_streak", "reply_latency_slowdown",
                                                   "response_rate_drop", "engagement_drop")} == dict.fromkeys(
        ("unanswered_streak", "reply_latency_slowdown", "response_rate_drop", "engagement_drop"), 14 * DAY_MS)
    assert [(sorted(q.channels), q.start_minute, q.end_minute) for q in policy.sending.quiet_hours] == [
        (["phone", "push", "sms"], 12 * 60, 13 * 60 + 30), (["phone", "push", "sms"], 21 * 60, 8 * 60)]
    assert policy.sending.same_campaign_gap is not None and policy.sending.same_campaign_gap.ms == 7 * DAY_MS


def test_knobs_that_switch_off_or_take_zero() -> None:
    policy = parse_policy(
        "cadence: {tolerance: '0'}\nsignals:\n  unanswered_streak: {rest: null}\n"
        "sending:\n  quiet_hours: []\n  same_campaign_gap: null\n", "p")
    assert policy.cadence_tolerance_ms == 0 and policy.signals.rest_ms("unanswered_streak") is None
    assert policy.sending.quiet_hours == () and policy.sending.same_campaign_gap is None


def test_unquoted_times_in_yaml_are_read_as_written() -> None:
    """PyYAML reads an unquoted 21:00 as the base-60 number 1260; the schema reads it back as 21:00."""
    policy = parse_policy("sending:\n  quiet_hours: [{channels: [sms], from: 21:00, to: 08:00}]\n", "p")
    assert [(q.start_minute, q.end_minute) for q in policy.sending.quiet_hours] == [(21 * 60, 8 * 60)]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("sending:\n  quiet_hours: [{channels: [sms], from: '25:00', to: '08:00'}]\n",
         r"p\.yaml:2: sending\.quiet_hours\.0\.from: '25:00' is not a time of day"),
        ("sending:\n  quiet_hours: [{channels: [sms], from: '08:00', to: '08:00'}]\n", r"would be empty"),
        ("sending:\n  quiet_hours: [{channels: [], from: '21:00', to: '08:00'}]\n", r"quiet_hours\.0\.channels"),
        ("sending:\n  quiet_hours: [{channels: [fax], from: '21:00', to: '08:00'}]\n", r"quiet_hours\.0\.channels"),
        ("sending:\n  same_campaign_gap: soon\n", r"same_campaign_gap: 'soon' is not a duration"),
        ("signals:\n  unanswered_streak: {rest: 0d}\n", r"unanswered_streak\.rest: '0d' must be longer than zero"),
        ("cadence:\n  tolerance: -1d\n", r"cadence\.tolerance: '-1d' is not a duration"),
        ("frequency:\n  escalation_factor: 1.0\n", r"frequency\.escalation_factor"),
        ("cooldowns:\n  throttle_update: never\n", r"cooldowns\.throttle_update: 'never' is not a duration"),
    ],
)
def test_invalid_lifecycle_and_sending_knobs_name_line_and_reason(document: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected):
        parse_policy(document, "p.yaml")


@pytest.mark.parametrize("document", ["", "# only a comment", "# a\n\n# b\n", "  # indented\n"])
def test_a_document_without_any_node_is_the_defaults_for_a_file_and_refused_for_a_body(document: str) -> None:
    assert parse_policy(document, "p.yaml") == default_policy()
    with pytest.raises(PolicyError, match=r"^p\.yaml: the document holds no settings .*--data-binary"):
        parse_policy(document, "p.yaml", empty_means_defaults=False)


def test_an_empty_mapping_is_the_defaults_for_a_body_too() -> None:
    assert parse_policy("{}\n# nothing else", "p.yaml", empty_means_defaults=False) == default_policy()
