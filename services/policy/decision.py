"""The pre-send decision: may this customer be touched on this channel now — and if not, when?

A pure function of the customer's snapshot (what the scorer last wrote to Redis), the policy and
the time — the API serves it from Redis without touching Kafka. Rules, in order:

    allow  transactional touches (not marketing, not counted; also under do-not-contact)
    deny   do_not_contact profile; a channel the customer unsubscribed from;
           a touch of the same campaign_id within sending.same_campaign_gap ("no two teams
           touching for the same thing": the reason names the earlier touch's rep and time)
    defer  the customer is throttled or cooling off (until the lifecycle's known end);
           one more touch would exceed the frequency cap or the stage's weekly cap;
           the channel's minimum gap since its last touch has not passed;
           a quiet period after a response is running (opened an email: no SMS for 3 days);
           quiet hours in the customer's local time (no push/SMS/phone over lunch or at night)
    allow  otherwise — with a warning when the monthly count enters the "tends to annoy" band

`next_allowed_ms` is the first moment every rule that said no is satisfied, if nobody touches the
customer meanwhile: the latest of the known ends, moved out of quiet hours. None only when a rule
ends on a response (a throttle without a rest) or never (do-not-contact, a closed channel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.contract import parse_rfc3339, to_ms
from services.durations import parse_duration_ms
from services.localtime import minute_label, quiet_until_ms, zone_of
from services.policy.model import Policy, QuietHours

ALLOW, DEFER, DENY = "allow", "defer", "deny"
THROTTLED_STATES = ("throttled", "cooling_off")
NO_RULE = "none"
"""The deciding rule of an allow without any reason."""
OTHER_RULE = "other"
"""A rule not in DECIDING_RULES (a bug): counted, never a new label value."""
DECIDING_RULES: dict[str, tuple[str, ...]] = {
    ALLOW: ("no_history", "transactional", "frequency_band_warning", NO_RULE),
    DENY: ("do_not_contact", "channel_closed", "same_campaign"),
    DEFER: ("throttled", "frequency_cap", "weekly_cap", "min_gap", "quiet_period", "quiet_hours"),
}
"""Every rule that can decide each outcome, in the order the rules are checked (the module docstring):
the bounded values of the decision metric's `rule` label."""

Wait = tuple[int | None, dict[str, Any]]
"""(until, reason): until None = not at a known time."""


@dataclass
class Decision:
    decision: str
    reasons: list[dict[str, Any]] = field(default_factory=list)
    next_allowed_ms: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)


def deciding_rule(decision: Decision) -> str:
    """The rule that decided: the first reason's (rules are checked in a fixed order), `none` for an
    allow without reasons; one of DECIDING_RULES[decision.decision], else `other`."""
    rule = decision.reasons[0].get("rule") if decision.reasons else NO_RULE
    return rule if rule in DECIDING_RULES.get(decision.decision, ()) else OTHER_RULE


def _ms(text: str | None) -> int | None:
    return to_ms(parse_rfc3339(text)) if text else None


@dataclass(frozen=True)
class Counted:
    """Counted touches of one window at the decision's moment: how many, and when the known ones
    leave the window (soonest first, only those still to leave)."""

    count: int
    leaves_at: list[int]


def _counted(block: Any, now_ms: int, window_ms: int | None = None) -> Counted:
    """What a snapshot's `frequency` or `weekly` block says about now.

    The snapshot lists when its *first* 50 counted touches leave the window (views.MAX_LEAVES) and
    how many there were at its `as_of`: the count now is that number less the listed ones gone
    since, so a customer touched 63 times in the window is not seen as 50. When the policy's window
    is not the one the snapshot was written for (the policy changed since), each touch leaves the
    new window `new - old` later than the old one: the times are shifted (exact for a shorter
    window; a longer one cannot see touches older than the old window until the scorer writes the
    customer's snapshot again, at its next event or due time)."""
    block = block if isinstance(block, dict) else {}
    raw = block.get("leaves_at")
    leaves = [t for t in (_ms(x) for x in raw if isinstance(x, str)) if t is not None] if isinstance(raw, list) else []
    written_for = _window_ms(block.get("window"))
    if window_ms is not None and written_for is not None and written_for != window_ms:
        leaves = [t - written_for + window_ms for t in leaves]
    leaves.sort()
    stated = block.get("counted_touches")
    total = max(stated if isinstance(stated, int) and not isinstance(stated, bool) else 0, len(leaves))
    future = [t for t in leaves if t > now_ms]
    return Counted(total - (len(leaves) - len(future)), future)


def _window_ms(label: Any) -> int | None:
    if not isinstance(label, str):
        return None
    try:
        return parse_duration_ms(label)
    except ValueError:
        return None


def _cap_wait(counted: Counted, cap: int) -> int | None:
    """When one more touch fits under `cap` (None: not known from the leave times kept)."""
    must_leave = counted.count - cap + 1
    if must_leave <= 0:
        return None
    return counted.leaves_at[must_leave - 1] if must_leave <= len(counted.leaves_at) else None


def decide(
    snapshot: dict[str, Any] | None,
    policy: Policy,
    channel: str,
    kind: str | None,
    now_ms: int,
    campaign_id: str | None = None,
) -> Decision:
    if snapshot is None:
        return Decision(ALLOW, [{"rule": "no_history", "detail": "nothing recorded for this customer yet"}])
    profile = snapshot.get("profile") or {}
    policy = policy.for_profile(profile)
    monthly = _counted(snapshot.get("frequency"), now_ms, policy.frequency_window.ms)
    weekly = _counted(snapshot.get("weekly"), now_ms)
    counts = {"counted_touches_30d": monthly.count, "counted_touches_7d": weekly.count,
              "window": policy.frequency_window.label}
    if kind in policy.uncounted_kinds:
        return Decision(ALLOW, [{"rule": "transactional", "detail": f"{kind} touches are not counted"}], counts=counts)
    denied = _denials(snapshot, profile, policy, channel, campaign_id, now_ms)
    waits = _waits(snapshot, profile, policy, channel, monthly, weekly, now_ms)
    if denied:
        until = _next_allowed(denied + waits, profile, policy, channel, now_ms)
        return Decision(DENY, [reason for _, reason in denied], until, counts)
    if waits:
        return Decision(DEFER, [reason for _, reason in waits], _next_allowed(waits, profile, policy, channel, now_ms),
                        counts)
    reasons = []
    if monthly.count + 1 > policy.warn_above:
        reasons.append({"rule": "frequency_band_warning", "window": policy.frequency_window.label,
                        "observed": monthly.count + 1, "threshold": policy.warn_above,
                        "detail": "above this many touches a month customers tend to feel annoyed"})
    return Decision(ALLOW, reasons, counts=counts)


def _next_allowed(waits: list[Wait], profile: dict[str, Any], policy: Policy, channel: str, now_ms: int) -> int | None:
    """The latest known end, then out of the quiet hours it may fall into (they recur daily)."""
    if any(until is None for until, _ in waits):
        return None
    moment = max(until for until, _ in waits if until is not None)
    for _ in range(2 * len(policy.sending.quiet_hours) + 1):
        later = max((end for _, end in _quiet_hours(profile, policy, channel, moment)), default=None)
        if later is None:
            break
        moment = later
    return moment


def _denials(snapshot: dict[str, Any], profile: dict[str, Any], policy: Policy, channel: str,
             campaign_id: str | None, now_ms: int) -> list[Wait]:
    reasons: list[Wait] = []
    if profile.get("do_not_contact"):
        reasons.append((None, {"rule": "do_not_contact", "detail": "the profile says do not contact"}))
    closed = snapshot.get("closed_channels", {})
    if channel in closed:
        reasons.append((None, {"rule": "channel_closed", "channel": channel, "since": closed[channel],
                               "detail": f"the customer unsubscribed from {channel}"}))
    gap_window = policy.sending.same_campaign_gap
    earlier = snapshot.get("recent_campaigns", {}).get(campaign_id) if campaign_id is not None else None
    at = _ms(earlier.get("at")) if earlier else None
    if gap_window is not None and earlier and at is not None and now_ms < at + gap_window.ms:
        gap, window = gap_window.ms, gap_window.label
        rep, via = earlier.get("rep_id"), earlier.get("channel")
        reasons.append((at + gap, {
            "rule": "same_campaign", "campaign_id": campaign_id, "window": window,
            "earlier_touch": {"at": earlier["at"], "rep_id": rep, "channel": via},
            "detail": f"campaign {campaign_id} already reached this customer at {earlier['at']} "
                      f"({rep or 'an unknown rep'}, {via}): not twice for the same thing within {window}"}))
    return reasons


def _quiet_hours(profile: dict[str, Any], policy: Policy, channel: str, now_ms: int) -> list[tuple[QuietHours, int]]:
    """The quiet hours holding now for this channel in the customer's time zone, with their ends."""
    zone = zone_of(profile.get("timezone"))
    if zone is None:
        return []
    found = []
    for quiet in policy.sending.quiet_hours:
        if channel in quiet.channels:
            end = quiet_until_ms(now_ms, zone, quiet.start_minute, quiet.end_minute)
            if end is not None:
                found.append((quiet, end))
    return found


def _throttled(snapshot: dict[str, Any], now_ms: int) -> Wait | None:
    lifecycle = snapshot.get("lifecycle")
    last_action = snapshot.get("last_action") or {}
    reason: dict[str, Any] = {"rule": "throttled", "active": snapshot.get("signals", {}).get("active", []),
                              "detail": last_action.get("suggestion", "")}
    if lifecycle is None:  # a snapshot written before the lifecycle existed
        if snapshot.get("status") != "throttled":
            return None
        pause = _ms(last_action.get("pause_until"))
        return (pause if pause is not None and pause > now_ms else None), reason
    if lifecycle.get("state") not in THROTTLED_STATES:
        return None
    reason["state"] = lifecycle["state"]
    reason["until"] = lifecycle.get("until")
    until = _ms(lifecycle.get("until"))
    if until is None:
        reason["detail"] = ("ends when the customer responds (no rest is configured for "
                            f"{', '.join(reason['active']) or 'its rules'}); " + reason["detail"])
        return None, reason
    if until <= now_ms:
        return None  # its known end has passed: the scorer lifts it at its next check
    return until, reason


def _waits(
    snapshot: dict[str, Any],
    profile: dict[str, Any],
    policy: Policy,
    channel: str,
    monthly: Counted,
    weekly: Counted,
    now_ms: int,
) -> list[Wait]:
    """(until, reason) for every rule that says not now; until None = not at a known time."""
    waits: list[Wait] = []
    throttled = _throttled(snapshot, now_ms)
    if throttled is not None:
        waits.append(throttled)
    for rule, counted, cap, window in (
        ("frequency_cap", monthly, policy.throttle_above, policy.frequency_window.label),
        ("weekly_cap", weekly, policy.sending.weekly_cap(profile.get("stage")), "7d"),
    ):
        if counted.count + 1 > cap:
            waits.append((_cap_wait(counted, cap), {"rule": rule, "window": window, "observed": counted.count,
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
    timezone = profile.get("timezone")
    for hours, end in _quiet_hours(profile, policy, channel, now_ms):
        span = f"{minute_label(hours.start_minute)}-{minute_label(hours.end_minute)}"
        waits.append((end, {"rule": "quiet_hours", "channel": channel, "window": span, "timezone": timezone,
                            "detail": f"no {channel} {span} in the customer's local time ({timezone})"}))
    return waits
