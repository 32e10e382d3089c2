"""Per-customer state the core reads and updates, and its compact JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scorer.core.windows import WindowCounts

NORMAL = "normal"
THROTTLED = "throttled"
DORMANT = "dormant"

MAX_RECENT_TOUCHES = 200
MAX_SEEN_IDS = 5000
MAX_COMPLAINTS = 20

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


@dataclass
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
    """UTC hour of the week (0 = Monday 00:00) -> positive responses then (at most 168 entries)."""
    throttled_for: list[str] = field(default_factory=list)
    """Every condition that held during the current throttle (what its recovery reports as cleared)."""
    last_re_engage_ms: int | None = None
    dormant_for: list[str] = field(default_factory=list)
    """Why the customer is dormant: `cadence_overdue` (reps silent) and/or `no_response` (customer silent)."""
    active_rules: list[str] = field(default_factory=list)
    """The fatigue conditions that held at the last evaluation (for hysteresis and the snapshot)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
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
            "response_hours": self.response_hours,
            "throttled_for": self.throttled_for,
            "last_re_engage_ms": self.last_re_engage_ms,
            "dormant_for": self.dormant_for,
            "active_rules": self.active_rules,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CustomerState:
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
            response_hours=dict(data.get("response_hours", {})),
            throttled_for=list(data.get("throttled_for", [])),
            last_re_engage_ms=data.get("last_re_engage_ms"),
            dormant_for=list(data.get("dormant_for", [])),
            active_rules=list(data.get("active_rules", [])),
        )
