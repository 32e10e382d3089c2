"""The pre-send decision: may this customer be touched on this channel now?

A pure function of the customer's snapshot (what the scorer last wrote to Redis), the policy and
the time — the API serves it from Redis without touching Kafka. Rules, in order:

    deny   do_not_contact profile; a channel the customer unsubscribed from
           (transactional touches are always allowed: they are not marketing and not counted)
    defer  the customer is throttled (until the throttle's pause_until, if it is known)
           one more touch would exceed the frequency cap or the stage's weekly cap
           the channel's minimum gap since its last touch has not passed
           a quiet period after a response is running (e.g. opened an email: no SMS for 3 days)
    allow  otherwise — with a warning when the monthly count enters the "tends to annoy" band
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.contract import parse_rfc3339, to_ms
from services.policy.model import Policy

ALLOW, DEFER, DENY = "allow", "defer", "deny"


@dataclass
class Decision:
    decision: str
    reasons: list[dict[str, Any]] = field(default_factory=list)
    next_allowed_ms: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)


def _ms(text: str | None) -> int | None:
    return to_ms(parse_rfc3339(text)) if text else None


def _future(times: list[str], now_ms: int) -> list[int]:
    return sorted(t for t in (_ms(x) for x in times) if t is not None and t > now_ms)


def _cap_wait(leaves_at: list[int], cap: int) -> int | None:
    """When one more touch fits under `cap` (None: it fits now)."""
    must_leave = len(leaves_at) - cap + 1
    if must_leave <= 0:
        return None
    return leaves_at[must_leave - 1] if must_leave <= len(leaves_at) else None


def decide(snapshot: dict[str, Any] | None, policy: Policy, channel: str, kind: str | None, now_ms: int) -> Decision:
    if snapshot is None:
        return Decision(ALLOW, [{"rule": "no_history", "detail": "nothing recorded for this customer yet"}])
    profile = snapshot.get("profile") or {}
    policy = policy.for_profile(profile)
    monthly = _future(snapshot.get("frequency", {}).get("leaves_at", []), now_ms)
    weekly = _future(snapshot.get("weekly", {}).get("leaves_at", []), now_ms)
    counts = {"counted_touches_30d": len(monthly), "counted_touches_7d": len(weekly),
              "window": policy.frequency_window.label}
    if kind in policy.uncounted_kinds:
        return Decision(ALLOW, [{"rule": "transactional", "detail": f"{kind} touches are not counted"}], counts=counts)
    denied = _denials(snapshot, profile, channel)
    if denied:
        return Decision(DENY, denied, counts=counts)
    waits = _waits(snapshot, profile, policy, channel, monthly, weekly, now_ms)
    if waits:
        untils = [until for until, _ in waits]
        next_allowed = None if any(u is None for u in untils) else max(u for u in untils if u is not None)
        return Decision(DEFER, [reason for _, reason in waits], next_allowed, counts)
    reasons = []
    if len(monthly) + 1 > policy.warn_above:
        reasons.append({"rule": "frequency_band_warning", "window": policy.frequency_window.label,
                        "observed": len(monthly) + 1, "threshold": policy.warn_above,
                        "detail": "above this many touches a month customers tend to feel annoyed"})
    return Decision(ALLOW, reasons, counts=counts)


def _denials(snapshot: dict[str, Any], profile: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    reasons = []
    if profile.get("do_not_contact"):
        reasons.append({"rule": "do_not_contact", "detail": "the profile says do not contact"})
    closed = snapshot.get("closed_channels", {})
    if channel in closed:
        reasons.append({"rule": "channel_closed", "channel": channel, "since": closed[channel],
                        "detail": f"the customer unsubscribed from {channel}"})
    return reasons


def _waits(
    snapshot: dict[str, Any],
    profile: dict[str, Any],
    policy: Policy,
    channel: str,
    monthly: list[int],
    weekly: list[int],
    now_ms: int,
) -> list[tuple[int | None, dict[str, Any]]]:
    """(until, reason) for every rule that says not now; until None = not at a known time."""
    waits: list[tuple[int | None, dict[str, Any]]] = []
    if snapshot.get("status") == "throttled":
        pause = _ms((snapshot.get("last_action") or {}).get("pause_until"))
        until = pause if pause is not None and pause > now_ms else None
        waits.append((until, {"rule": "throttled", "active": snapshot.get("signals", {}).get("active", []),
                              "detail": (snapshot.get("last_action") or {}).get("suggestion", "")}))
    for rule, times, cap, window in (
        ("frequency_cap", monthly, policy.throttle_above, policy.frequency_window.label),
        ("weekly_cap", weekly, policy.sending.weekly_cap(profile.get("stage")), "7d"),
    ):
        if len(times) + 1 > cap:
            waits.append((_cap_wait(times, cap), {"rule": rule, "window": window, "observed": len(times),
                                                  "threshold": cap}))
    last = _ms(snapshot.get("last_touch_by_channel", {}).get(channel))
    gap = policy.sending.min_gap_ms(channel)
    if last is not None and now_ms < last + gap:
        waits.append((last + gap, {"rule": "min_gap", "channel": channel, "threshold_s": gap // 1000,
                                   "detail": f"last {channel} touch at {snapshot['last_touch_by_channel'][channel]}"}))
    responses = snapshot.get("last_response_by_channel", {})
    for quiet in policy.sending.quiet_periods:
        if channel not in quiet.pause:
            continue
        for after in sorted(quiet.after):
            at = _ms(responses.get(quiet.channel, {}).get(after))
            if at is not None and now_ms < at + quiet.duration.ms:
                waits.append((at + quiet.duration.ms, {
                    "rule": "quiet_period", "after": after, "on": quiet.channel, "window": quiet.duration.label,
                    "detail": f"{after} on {quiet.channel} at {responses[quiet.channel][after]}: "
                              f"no {channel} for {quiet.duration.label}"}))
    return waits
