"""Dry run of a policy through the real core, so a policy the scorer cannot run is refused up front.

Parsing proves a policy well-formed, not runnable: a window or cool-off long enough to push a
moment past what the core can represent only fails once an event meets it. `dry_run` replays a
small canned history through exactly the functions the live scorer calls per record and per timer
(`engine.apply_event` / `apply_profile` / `on_due` / `next_due_ms`, `views.snapshot`, the lists'
entry, the state's JSON round trip) and the pre-send decision the API answers with, for one customer in every
segment, then follows each customer's timers well past the longest duration. Any exception is a
PolicyError naming what failed. Pure: the time comes in as `now_ms`; well under a second on one core.

Used by `PUT /v1/policy` (the `fatigue` command injects it into the API, which may not import the
scorer) and by the scorer before it swaps in a new policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from scorer.core import engine, lifecycle, timeline, timers
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.state_codec import decode_state, encode_state
from scorer.core.views import snapshot
from services.contract import Channel, ResponseKind, Stage, Tier, TouchKind
from services.durations import DAY_MS, HOUR_MS
from services.errors import PolicyError
from services.policy.decision import decide
from services.policy.model import Policy

HISTORY_DAYS = 120
TIMER_STEPS_BETWEEN = 2
TIMER_STEPS_AFTER = 12
"""Due timers fired in order between two events, and after the last one (window expiries are dense)."""
JUMPS_DAYS = (1, 3, 7, 14, 30, 90, 180, 400, 800)
"""Then timers fired that long after the last event, as after a long outage: past any policy duration."""
ROUND_TRIP_EVERY = 8
TIME_ZONES = ("America/New_York", "Asia/Shanghai", "Europe/London", "Australia/Lord_Howe", "UTC")


def segments() -> Iterator[dict[str, Any]]:
    """One profile per tier x stage (and none at all), so every segment's overrides are exercised."""
    yield {}
    for t, tier in enumerate([*Tier, None]):
        for s, stage in enumerate([*Stage, None]):
            profile: dict[str, Any] = {"timezone": TIME_ZONES[(t + s) % len(TIME_ZONES)], "owner_rep_id": "rep-1"}
            if tier is not None:
                profile["tier"] = str(tier)
            if stage is not None:
                profile["stage"] = str(stage)
            yield profile


def history(customer_id: str, now_ms: int) -> list[ContactEvent]:
    """Touches on every channel and of every kind, a burst over the cap, slow and fast replies, every
    response kind (an unsubscribe and a complaint included), a duplicate and a late event."""
    start = now_ms - HISTORY_DAYS * DAY_MS
    events: list[ContactEvent] = []
    channels, kinds = list(Channel), list(TouchKind)
    for i in range(40):
        at = start + i * 2 * DAY_MS + (i % 5) * HOUR_MS
        events.append(_touch(customer_id, f"t{i}", channels[i % len(channels)], kinds[i % len(kinds)], at))
    burst = now_ms - 20 * DAY_MS
    for i in range(16):
        events.append(_touch(customer_id, f"b{i}", "phone", "promo", burst + i * HOUR_MS * 20))
    responses = list(ResponseKind)
    for i in range(24):
        kind = responses[i % len(responses)]
        answered = f"t{i}"
        delay = (i % 6 + 1) * HOUR_MS * (8 if i > 16 else 1)  # replies slow down late in the history
        at = start + i * 2 * DAY_MS + (i % 5) * HOUR_MS + delay
        events.append(ContactEvent(f"r{i}", "response", customer_id, str(channels[i % len(channels)]), at,
                                   kind=str(kind), in_reply_to=answered))
    events.append(_touch(customer_id, "t0", "email", "value", start))  # a duplicate
    events.sort(key=lambda e: e.occurred_at_ms)
    events.append(_touch(customer_id, "late", "sms", "promo", start - 30 * DAY_MS))  # late: behind the grace
    return events


def _touch(customer_id: str, event_id: str, channel: str, kind: str, at_ms: int) -> ContactEvent:
    return ContactEvent(event_id, "touch", customer_id, str(channel), at_ms, kind=str(kind), rep_id="rep-1",
                        campaign_id="camp-1", producer="dry-run")


def distinct_segments(policy: Policy) -> list[dict[str, Any]]:
    """One profile per stage and distinct effective policy (segments), in a stable order."""
    chosen: list[dict[str, Any]] = []
    seen: list[tuple[Any, Policy]] = []
    for profile in segments():
        key = (profile.get("stage"), policy.for_profile(profile or None))
        if key not in seen:
            seen.append(key)
            chosen.append(profile)
    return chosen


def dry_run(policy: Policy, now_ms: int) -> None:
    """Raise PolicyError when the core fails anywhere on the canned history under `policy`."""
    for number, profile in enumerate(distinct_segments(policy)):
        customer_id = f"dry-run-{number}"
        try:
            _run_customer(customer_id, profile, policy, now_ms)
        except PolicyError:
            raise
        except Exception as exc:  # whatever the core raises: the policy cannot be run
            where = ", ".join(f"{k} {v}" for k, v in profile.items() if k in ("tier", "stage")) or "no profile"
            raise PolicyError(
                f"policy: the scorer cannot run this policy: {type(exc).__name__}: {exc} "
                f"(dry run of a canned history, customer with {where})"
            ) from exc


def _run_customer(customer_id: str, profile: dict[str, Any], policy: Policy, now_ms: int) -> None:
    state = CustomerState(customer_id)
    events = history(customer_id, now_ms)
    if profile:
        timeline.apply_profile(state, profile, events[0].occurred_at_ms, policy)
    for number, event in enumerate(events):
        _fire_timers(state, policy, until_ms=event.occurred_at_ms, steps=TIMER_STEPS_BETWEEN)
        # What timeline.apply_event does, with the timers before it bounded (above) for time's sake.
        engine.apply_event(state, event, max(event.occurred_at_ms, state.clock_ms), policy)
        state.due_ms = timers.next_firing_ms(state, policy, state.clock_ms)
        if number % ROUND_TRIP_EVERY == 0:
            state = _round_trip(state, state.clock_ms, policy)
    _fire_timers(state, policy, until_ms=now_ms + JUMPS_DAYS[-1] * DAY_MS, steps=TIMER_STEPS_AFTER)
    state = _round_trip(state, state.clock_ms, policy)
    last_ms = state.clock_ms
    for days in JUMPS_DAYS:
        engine.on_due(state, last_ms + days * DAY_MS, policy)
        engine.next_due_ms(state, policy)
        state = _round_trip(state, state.clock_ms, policy)


def _fire_timers(state: CustomerState, policy: Policy, *, until_ms: int, steps: int) -> None:
    """Up to `steps` due times up to `until_ms`, one at a time (timeline.advance fires them all)."""
    for _ in range(steps):
        due = state.due_ms
        if due is None or due > until_ms:
            break
        timeline.advance(state, max(due, 0), policy)


def _round_trip(state: CustomerState, now_ms: int, policy: Policy) -> CustomerState:
    """What the scorer stores and the API serves, as it would: JSON both ways, and a decision."""
    snapshot(state, now_ms, policy, next_due=engine.next_due_ms(state, policy))  # as a state stored without
    # its due time (an older scorer's) is shown: the next check computed, which must be representable
    snap = json.loads(json.dumps(snapshot(state, now_ms, policy)))
    lifecycle.list_entry(state)
    for channel in ("email", "sms", "phone"):
        decide(snap, policy, channel, "promo", now_ms)
    CustomerState.from_json(json.loads(json.dumps(state.to_json())))  # FATIGUE_STORE_FORMAT=json
    return decode_state(encode_state(state))


def check_policy(policy: Policy) -> None:
    """`dry_run` at the current time: the check `PUT /v1/policy` and the scorer's reloads apply."""
    dry_run(policy, time.time_ns() // 1_000_000)
