"""Recording one counted event into the state: windows, ids, touches, answers, latency, campaigns.

`record` returns whether the event ends a to_activate (the lifecycle's `woke` fact): a counted
touch ends the reps' silence (not the customer's: `no_response`), a positive answer ends both.
"""

from __future__ import annotations

import bisect

from scorer.core import timing
from scorer.core.signals import response_bit
from scorer.core.state import (
    MAX_CAMPAIGNS,
    MAX_COMPLAINTS,
    MAX_RECENT_TOUCHES,
    MAX_SEEN_IDS,
    PHASE_TO_ACTIVATE,
    ContactEvent,
    CustomerState,
)
from scorer.core.windows import SeriesKey
from services.policy.model import Policy

NEGATIVE_KINDS = frozenset({"unsubscribe", "complaint", "bounce"})
"""Responses that do not mean the customer is back."""


def record(state: CustomerState, event: ContactEvent, now_ms: int, policy: Policy) -> bool:
    ts = event.occurred_at_ms
    state.counts.add(SeriesKey(event.type, event.channel, event.kind or "-"), ts, now_ms)
    state.counts.advance(now_ms, policy.retention_ms)
    state.events_counted += 1
    state.first_seen_ms = ts if state.first_seen_ms is None else min(state.first_seen_ms, ts)
    state.watermark_ms = ts if state.watermark_ms is None else max(state.watermark_ms, ts)
    _remember_id(state, event.dedup_key, ts, policy)
    if event.type == "touch":
        return _record_touch(state, event, policy)
    return _record_response(state, event, policy)


def _remember_id(state: CustomerState, key: str, ts: int, policy: Policy) -> None:
    state.seen[key] = ts
    assert state.watermark_ms is not None
    horizon = state.watermark_ms - policy.grace_ms
    if len(state.seen) > MAX_SEEN_IDS or min(state.seen.values()) < horizon:
        kept = sorted(((t, k) for k, t in state.seen.items() if t >= horizon), reverse=True)
        state.seen = {k: t for t, k in kept[:MAX_SEEN_IDS]}


def _record_touch(state: CustomerState, event: ContactEvent, policy: Policy) -> bool:
    ts = event.occurred_at_ms
    bisect.insort(state.recent_touches, (ts, event.channel, event.event_id, event.kind or "-", 0))
    del state.recent_touches[:-MAX_RECENT_TOUCHES]
    if (event.kind or "-") in policy.uncounted_kinds:
        return False
    state.last_touch_ms = ts if state.last_touch_ms is None else max(state.last_touch_ms, ts)
    if event.campaign_id is not None and policy.sending.same_campaign_gap is not None:
        _remember_campaign(state, event, policy.sending.same_campaign_gap.ms)
    if state.phase != PHASE_TO_ACTIVATE or "no_response" in state.dormant_for:
        return False
    return ts + policy.cadence_ms((state.profile or {}).get("stage")) > state.clock_ms  # recent: wakes them


def _remember_campaign(state: CustomerState, event: ContactEvent, gap_ms: int) -> None:
    """The latest counted touch per campaign, for "no two teams touching for the same thing"."""
    assert event.campaign_id is not None
    ts = event.occurred_at_ms
    known = state.campaigns.get(event.campaign_id)
    if known is None or ts >= known[0]:
        state.campaigns[event.campaign_id] = (ts, event.rep_id, event.channel)
    horizon = (state.watermark_ms if state.watermark_ms is not None else ts) - gap_ms
    if len(state.campaigns) > MAX_CAMPAIGNS or min(t for t, _, _ in state.campaigns.values()) < horizon:
        kept = sorted(((v[0], c) for c, v in state.campaigns.items() if v[0] >= horizon), reverse=True)
        state.campaigns = {c: state.campaigns[c] for _, c in kept[:MAX_CAMPAIGNS]}


def _record_response(state: CustomerState, event: ContactEvent, policy: Policy) -> bool:
    ts = event.occurred_at_ms
    state.last_response_ms = ts if state.last_response_ms is None else max(state.last_response_ms, ts)
    woke = (state.phase == PHASE_TO_ACTIVATE and ts + policy.silence_ms > state.clock_ms
            and event.kind not in NEGATIVE_KINDS)
    if event.kind == "complaint":
        bisect.insort(state.complaints_ms, ts)
        del state.complaints_ms[:-MAX_COMPLAINTS]
    timing.record_response_time(state, ts, event.kind)
    key = f"{event.channel}|{event.kind or '-'}"
    state.last_responses[key] = max(ts, state.last_responses.get(key, ts))
    if event.kind == "unsubscribe" and policy.signals.unsubscribe_closes_channel:
        if ts > state.last_responses.get(f"{event.channel}|resubscribe", -1):  # unless opted back in since
            state.closed_channels[event.channel] = max(ts, state.closed_channels.get(event.channel, ts))
    if event.kind == "resubscribe" and state.closed_channels.get(event.channel, ts) <= ts:
        state.closed_channels.pop(event.channel, None)  # the later of the two wins, in any arrival order
    index = _answered_touch(state, event)
    if index is not None:
        touch_ms, channel, touch_id, kind, mask = state.recent_touches[index]
        state.recent_touches[index] = (touch_ms, channel, touch_id, kind, mask | response_bit(event.kind))
        if event.kind in policy.reply_kinds:
            bisect.insort(state.latency_samples, (ts, max(0, ts - touch_ms)))
            del state.latency_samples[: -policy.max_latency_samples]
    return woke


def _answered_touch(state: CustomerState, event: ContactEvent) -> int | None:
    """Index in recent_touches of the touch a response answers: `in_reply_to`, else the latest
    earlier touch on the response's channel."""
    touches = state.recent_touches
    if event.in_reply_to is not None:
        for i in range(len(touches) - 1, -1, -1):
            if touches[i][2] == event.in_reply_to:
                return i
    for i in range(len(touches) - 1, -1, -1):
        if touches[i][1] == event.channel and touches[i][0] <= event.occurred_at_ms:
            return i
    return None
