"""The policy dry run refuses what the core cannot run, and passes every policy that parses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scorer.dryrun import distinct_segments, dry_run
from services.durations import DAY_MS
from services.errors import PolicyError
from services.policy.model import Window, default_policy, parse_policy

NOW_MS = 1_795_942_800_000  # 2026-12-01


def test_the_packaged_default_runs() -> None:
    dry_run(default_policy(), NOW_MS)


def test_a_cool_off_beyond_what_the_core_can_represent_is_refused() -> None:
    """Built around the parser's bounds, as a policy stored by an older build could be."""
    signals = replace(default_policy().signals, complaint_cool_off=Window("3000000d", 3_000_000 * DAY_MS))
    policy = replace(default_policy(), signals=signals)
    with pytest.raises(PolicyError, match=r"cannot run this policy: \w+Error: .*out of range"):
        dry_run(policy, NOW_MS)


def test_a_window_beyond_what_the_core_can_represent_is_refused() -> None:
    huge = Window("3000000d", 3_000_000 * DAY_MS)
    policy = replace(default_policy(), windows=(*default_policy().windows, huge))
    with pytest.raises(PolicyError, match="cannot run this policy"):
        dry_run(policy, NOW_MS)


@pytest.mark.parametrize("doc", [
    "windows: [24h, 400d]\nfrequency: {window: 400d}",
    "signals: {complaint: {cool_off: 400d}}\ncooldowns: {min_throttle: 400d, re_engage: 400d}",
    "cadence: {default: 400d, silence: 400d, by_stage: {lead: 1s}}",
    "sending: {min_gap_default: 400d, min_gap_by_channel: {email: 400d}}",
    "segments: [{tier: A, stage: lead, cadence: 1s, weekly_cap: 0, frequency: {throttle_above: 1, "
    "recover_at_or_below: 0}}]",
    "frequency: {throttle_above: 10000, recover_at_or_below: 9999}",
])
def test_policies_at_the_parser_bounds_run(doc: str) -> None:
    """Whatever the parser lets through, the core can run: its bounds leave the core headroom."""
    dry_run(parse_policy(doc), NOW_MS)


def test_every_stage_and_segment_gets_a_customer() -> None:
    policy = parse_policy("segments: [{tier: A, cadence: 3d}, {tier: B, stage: lead, weekly_cap: 1}]")
    profiles = distinct_segments(policy)
    stages = {p.get("stage") for p in profiles}
    assert stages == {None, "lead", "prospect", "intent", "negotiation", "onboarding", "customer", "loyal"}
    assert any(p.get("tier") == "A" for p in profiles) and any(p.get("tier") == "B" for p in profiles)
