"""Per-customer state the core reads and updates, and its compact JSON form.

JSON version 2 (`"v": 2`) adds the lifecycle phase and its bookkeeping, recent campaigns and
reply hours binned in local time; a version-1 state (written by an older scorer) still loads:
`from_json` derives what it lacks (`_migrate_v1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scorer.core.windows import WindowCounts
from services.durations import HOUR_MS
from services.localtime import HOURS_PER_WEEK, local_hour_of_week, zone_of

# ---- status: the coarse state shown since version 1 (snapshot `status`, action `status`) ----
NORMAL = "normal"
THROTTLED = "throttled"
DORMANT = "dormant"

# ---- phase: the lifecycle state (scorer/core/lifecycle.py); each maps to one status ----
PHASE_NORMAL = "normal"
PHASE_THROTTLED = "throttled"
PHASE_COOLING_OFF = "cooling_off"
PHASE_TO_ACTIVATE = "to_activate"
STATUS_OF_PHASE = {
    PHASE_NORMAL: NORMAL,
    PHASE_THROTTLED: THROTTLED,
    PHASE_COOLING_OFF: THROTTLED,
    PHASE_TO_ACTIVATE: DORMANT,
}

TIME_BOUND_RULES = frozenset({"frequency_cap", "complaint"})
"""Fatigue conditions that end at a known time without anyone doing anything (touches leave the
window, the complaint cool-off passes). The others end on a response, or after a rest."""

DUE_UNKNOWN = -1
"""`CustomerState.due_ms` of a state whose next due time is still to be computed."""

MAX_RECENT_TOUCHES = 200
MAX_SEEN_IDS = 5000
MAX_COMPLAINTS = 20
MAX_CAMPAIGNS = 50
STATE_VERSION = 2

TouchRecord = tuple[int, str, str, str, int]
"""(occurred_at_ms, channel, event_id, kind or '-', bitmask of response kinds attributed to it)."""


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """A validated touch or response, in the core's units."""

    event_id: str
    type: str  # "touch" | "response"
    customer_id: str
    channel: str
    occurred_at_ms: int
    kind: str | None = None
    in_reply_to: str | None = None
    rep_id: str | None = None
    campaign_id: str | None = None
    producer: str = ""

    @property
    def dedup_key(self) -> str:
        """Event ids are unique per producer, so the producer is part of the identity."""
        return f"{self.producer}/{self.event_id}"


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    status: str = NORMAL
    status_since_ms: int | None = None
    profile: dict[str, Any] | None = None
    counts: WindowCounts = field(default_factory=WindowCounts)
    recent_touches: list[TouchRecord] = field(default_factory=list)
    """The latest touches, oldest first, bounded (MAX_RECENT_TOUCHES)."""
    latency_samples: list[tuple[int, int]] = field(default_factory=list)
    """(response occurred_at_ms, latency_ms) of the latest replies, oldest first, bounded."""
    seen: dict[str, int] = field(default_factory=dict)
    """dedup_key -> occurred_at_ms of events counted within the grace period."""
    first_seen_ms: int | None = None
    last_touch_ms: int | None = None
    last_response_ms: int | None = None
    watermark_ms: int | None = None
    clock_ms: int = 0
    seq: int = 0
    last_action: dict[str, Any] | None = None
    events_counted: int = 0
    complaints_ms: list[int] = field(default_factory=list)
    """When the latest complaints / spam reports happened (bounded)."""
    closed_channels: dict[str, int] = field(default_factory=dict)
    """channel -> when the customer unsubscribed from it."""
    last_responses: dict[str, int] = field(default_factory=dict)
    """`channel|kind` -> when the latest such response happened (for quiet periods)."""
    response_hours: dict[str, int] = field(default_factory=dict)
    """Local hour of the week (0 = Monday 00:00 on the customer's wall clock at the moment of the
    reply, in the time zone of their profile then) -> positive responses then (at most 168)."""
    throttled_for: list[str] = field(default_factory=list)
    """Every condition that held during the current throttle (what its recovery reports as cleared)."""
    last_re_engage_ms: int | None = None
    dormant_for: list[str] = field(default_factory=list)
    """Why the customer is dormant: `cadence_overdue` (reps silent) and/or `no_response` (customer silent)."""
    active_rules: list[str] = field(default_factory=list)
    """The fatigue conditions that held at the last evaluation (for hysteresis and the snapshot)."""
    phase: str = PHASE_NORMAL
    """The lifecycle state (scorer/core/lifecycle.py); `status` is always STATUS_OF_PHASE[phase]."""
    phase_since_ms: int | None = None
    overdue_since_ms: int | None = None
    """to_activate: when the customer became overdue (the earliest due time that passed)."""
    fresh_start_ms: int | None = None
    """Response-bound signals only read evidence after this (set when a rest or the silence ends a
    throttle, so that the next touch is not judged by the fatigue that was already rested)."""
    told: dict[str, int] = field(default_factory=dict)
    """Escalation key -> when the rep was last told it holds (throttle start or update)."""
    held_keys: list[str] = field(default_factory=list)
    """The escalation keys that held at the last evaluation (an update goes out on a crossing)."""
    silence_alerted_ms: int | None = None
    """When the rep was last told (or the list said) the customer has gone quiet."""
    campaigns: dict[str, tuple[int, str | None, str]] = field(default_factory=dict)
    """campaign_id -> (occurred_at_ms, rep_id, channel) of its latest counted touch (bounded)."""
    due_ms: int | None = DUE_UNKNOWN
    """When the customer's timeline must be evaluated next with no event in between, in event time
    (scorer/core/timeline.py); None: never; DUE_UNKNOWN: to be computed (a state from before it was kept)."""
    told_status: str = NORMAL
    """The status the rep was last told (scorer/core/delivery.py): what a withheld history leaves them knowing."""
    last_producer: str = ""
    """The producer of the latest counted event (what `fatigue import` counts the alerts it caused by)."""
    pending_action: dict[str, Any] | None = None
    """The latest transition not delivered yet because the customer's timeline has not caught up with
    processing time (history, waiting for its timers); decided on when it has."""

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "customer_id": self.customer_id,
            "status": self.status,
            "status_since_ms": self.status_since_ms,
            "profile": self.profile,
            "counts": self.counts.to_json(),
            "recent_touches": [list(t) for t in self.recent_touches],
            "latency_samples": [list(s) for s in self.latency_samples],
            "seen": self.seen,
            "first_seen_ms": self.first_seen_ms,
            "last_touch_ms": self.last_touch_ms,
            "last_response_ms": self.last_response_ms,
            "watermark_ms": self.watermark_ms,
            "clock_ms": self.clock_ms,
            "seq": self.seq,
            "last_action": self.last_action,
            "events_counted": self.events_counted,
            "complaints_ms": self.complaints_ms,
            "closed_channels": self.closed_channels,
            "last_responses": self.last_responses,
            "response_hours_local": self.response_hours,
            "throttled_for": self.throttled_for,
            "last_re_engage_ms": self.last_re_engage_ms,
            "dormant_for": self.dormant_for,
            "active_rules": self.active_rules,
            **self._lifecycle_json(),
        }

    def _lifecycle_json(self) -> dict[str, Any]:
        """The version-2 fields, only where they differ from their defaults (the state is stored for
        every customer: most are normal, never escalated, without campaigns)."""
        fields: dict[str, Any] = {
            "phase": self.phase if self.phase != PHASE_NORMAL else None,
            "phase_since_ms": self.phase_since_ms,
            "overdue_since_ms": self.overdue_since_ms,
            "fresh_start_ms": self.fresh_start_ms,
            "told": self.told,
            "held_keys": self.held_keys,
            "silence_alerted_ms": self.silence_alerted_ms,
            "campaigns": {c: list(v) for c, v in self.campaigns.items()},
            "told_status": self.told_status if self.told_status != self.status else None,
            "pending_action": self.pending_action,
            "last_producer": self.last_producer or None,
        }
        kept = {k: v for k, v in fields.items() if v is not None and v != {} and v != []}
        if self.due_ms != DUE_UNKNOWN:
            kept["due_ms"] = self.due_ms  # null: no timer
        return kept

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CustomerState:
        state = cls._from_fields(data)
        if data.get("v", 1) < 2:
            _migrate_v1(state, data)
        return state

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> CustomerState:
        return cls(
            customer_id=data["customer_id"],
            status=data["status"],
            status_since_ms=data["status_since_ms"],
            profile=data["profile"],
            counts=WindowCounts.from_json(data["counts"]),
            recent_touches=[(t[0], t[1], t[2], t[3], t[4]) for t in data["recent_touches"]],
            latency_samples=[(s[0], s[1]) for s in data["latency_samples"]],
            seen=data["seen"],
            first_seen_ms=data["first_seen_ms"],
            last_touch_ms=data["last_touch_ms"],
            last_response_ms=data["last_response_ms"],
            watermark_ms=data["watermark_ms"],
            clock_ms=data["clock_ms"],
            seq=data["seq"],
            last_action=data["last_action"],
            events_counted=data["events_counted"],
            complaints_ms=list(data.get("complaints_ms", [])),
            closed_channels=dict(data.get("closed_channels", {})),
            last_responses=dict(data.get("last_responses", {})),
            response_hours=dict(data.get("response_hours_local", {})),
            throttled_for=list(data.get("throttled_for", [])),
            last_re_engage_ms=data.get("last_re_engage_ms"),
            dormant_for=list(data.get("dormant_for", [])),
            active_rules=list(data.get("active_rules", [])),
            phase=data.get("phase") or PHASE_NORMAL,
            phase_since_ms=data.get("phase_since_ms"),
            overdue_since_ms=data.get("overdue_since_ms"),
            fresh_start_ms=data.get("fresh_start_ms"),
            told=dict(data.get("told", {})),
            held_keys=list(data.get("held_keys", [])),
            silence_alerted_ms=data.get("silence_alerted_ms"),
            campaigns={c: (v[0], v[1], v[2]) for c, v in data.get("campaigns", {}).items()},
            due_ms=data.get("due_ms", DUE_UNKNOWN),
            told_status=data.get("told_status") or data["status"],
            pending_action=data.get("pending_action"),
            last_producer=data.get("last_producer") or "",
        )


def phase_of_v1(status: str, rules: list[str]) -> str:
    """The lifecycle phase a version-1 state was in, from its status and throttle reasons."""
    if status == DORMANT:
        return PHASE_TO_ACTIVATE
    if status == THROTTLED:
        return PHASE_THROTTLED if TIME_BOUND_RULES & set(rules) else PHASE_COOLING_OFF
    return PHASE_NORMAL


def _migrate_v1(state: CustomerState, data: dict[str, Any]) -> None:
    """Fill in what version 1 did not keep. Its reply hours were binned in UTC: they are moved to
    the profile's local time at the offset in force at the state's clock, which is what the
    version-1 suggestion showed (DST could not be told apart afterwards)."""
    state.phase = phase_of_v1(state.status, state.throttled_for or state.active_rules)
    state.phase_since_ms = state.status_since_ms
    if state.phase == PHASE_TO_ACTIVATE:
        state.overdue_since_ms = state.status_since_ms
        if "no_response" in state.dormant_for:
            state.silence_alerted_ms = state.status_since_ms
    state.held_keys = [r for r in state.active_rules if r in TIME_BOUND_RULES]
    zone = zone_of((state.profile or {}).get("timezone"))
    now = state.clock_ms
    week_start = now - local_hour_of_week(now, None) * HOUR_MS - now % HOUR_MS
    local: dict[str, int] = {}
    for how_utc, count in data.get("response_hours", {}).items():
        how = local_hour_of_week(week_start + int(how_utc) * HOUR_MS, zone) % HOURS_PER_WEEK
        local[str(how)] = local.get(str(how), 0) + count
    state.response_hours = local
