"""A customer's state as stored: a compact, typed, versioned MessagePack array — and every older form.

The scorer writes a customer's state on every batch that touches the customer, so its encoding is on
the hot path. Version 3 is a MessagePack array (msgspec) of the state's fields in a fixed order,
without field names, the window series as their two bucket maps (minute and hour starts in ms ->
count) exactly as the core keeps them: nothing is rebuilt to store it. Reading it back is typed
(`StoredStateV3`): a value of the wrong shape is refused with the path of the first wrong element,
never half-loaded.

Versions 1 and 2 (JSON objects, `CustomerState.to_json`) stay readable; a state read in an older form
is written in version 3 at its next write. A payload is told apart by its first byte: `{` (JSON) or a
MessagePack array header. Fields are only ever appended to the array, with a default, so an older
array decodes with the defaults and a newer one (extra trailing elements) is read by an older build
as far as it knows.

This module turns a state into a payload and back; compressing and storing it as text is
services/stored_values.py's (the scorer's `FATIGUE_STORE_FORMAT`).
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from scorer.core.state import PHASE_NORMAL, CustomerState
from scorer.core.windows import Series, SeriesKey, WindowCounts

FORMAT_VERSION = 3

_JSON_STARTS = frozenset(b"{ \t\r\n")


class StoredStateV3(msgspec.Struct, array_like=True):
    """The stored array, field by field (append only: each new field gets a default)."""

    v: int
    customer_id: str
    status: str
    status_since_ms: int | None
    profile: dict[str, Any] | None
    counts: dict[str, tuple[dict[int, int], dict[int, int]]]
    """SeriesKey.encode() -> (minute buckets, hour buckets): bucket start ms -> count."""
    recent_touches: list[tuple[int, str, str, str, int]]
    latency_samples: list[tuple[int, int]]
    seen: dict[str, int]
    first_seen_ms: int | None
    last_touch_ms: int | None
    last_response_ms: int | None
    watermark_ms: int | None
    clock_ms: int
    seq: int
    last_action: dict[str, Any] | None
    events_counted: int
    complaints_ms: list[int]
    closed_channels: dict[str, int]
    last_responses: dict[str, int]
    response_hours: dict[str, int]
    throttled_for: list[str]
    last_re_engage_ms: int | None
    dormant_for: list[str]
    active_rules: list[str]
    phase: str
    phase_since_ms: int | None
    overdue_since_ms: int | None
    fresh_start_ms: int | None
    told: dict[str, int]
    held_keys: list[str]
    silence_alerted_ms: int | None
    campaigns: dict[str, tuple[int, str | None, str]]
    due_ms: int | None
    told_status: str
    last_producer: str
    pending_action: dict[str, Any] | None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(StoredStateV3)


class StateUnreadable(ValueError):
    """A stored state payload that is neither a state this build reads nor JSON of one."""


def encode_state(state: CustomerState) -> bytes:
    """The state as a version-3 payload (MessagePack)."""
    counts = {key.encode(): (series.fine, series.coarse) for key, series in state.counts.series.items()}
    return _ENCODER.encode((
        FORMAT_VERSION, state.customer_id, state.status, state.status_since_ms, state.profile, counts,
        state.recent_touches, state.latency_samples, state.seen, state.first_seen_ms, state.last_touch_ms,
        state.last_response_ms, state.watermark_ms, state.clock_ms, state.seq, state.last_action,
        state.events_counted, state.complaints_ms, state.closed_channels, state.last_responses,
        state.response_hours, state.throttled_for, state.last_re_engage_ms, state.dormant_for,
        state.active_rules, state.phase, state.phase_since_ms, state.overdue_since_ms, state.fresh_start_ms,
        state.told, state.held_keys, state.silence_alerted_ms, state.campaigns, state.due_ms, state.told_status,
        state.last_producer, state.pending_action,
    ))


def decode_state(payload: bytes) -> CustomerState:
    """The state in a stored payload of any version; StateUnreadable naming why when it is none."""
    if not payload:
        raise StateUnreadable("an empty value")
    if payload[0] in _JSON_STARTS:
        return _from_json(payload)
    try:
        stored = _DECODER.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError is one: the message names the element
        raise StateUnreadable(f"not a stored state: {exc}") from None
    if stored.v != FORMAT_VERSION:
        raise StateUnreadable(f"a state of format version {stored.v}; this build reads up to {FORMAT_VERSION}")
    return _from_v3(stored)


def _from_json(payload: bytes) -> CustomerState:
    try:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return CustomerState.from_json(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise StateUnreadable(f"not a stored state: {type(exc).__name__}: {exc}") from None


def _from_v3(s: StoredStateV3) -> CustomerState:
    series = {SeriesKey.decode(key): Series(fine, coarse) for key, (fine, coarse) in s.counts.items()}
    return CustomerState(
        customer_id=s.customer_id, status=s.status, status_since_ms=s.status_since_ms, profile=s.profile,
        counts=WindowCounts(series), recent_touches=s.recent_touches, latency_samples=s.latency_samples,
        seen=s.seen, first_seen_ms=s.first_seen_ms, last_touch_ms=s.last_touch_ms,
        last_response_ms=s.last_response_ms, watermark_ms=s.watermark_ms, clock_ms=s.clock_ms, seq=s.seq,
        last_action=s.last_action, events_counted=s.events_counted, complaints_ms=s.complaints_ms,
        closed_channels=s.closed_channels, last_responses=s.last_responses, response_hours=s.response_hours,
        throttled_for=s.throttled_for, last_re_engage_ms=s.last_re_engage_ms, dormant_for=s.dormant_for,
        active_rules=s.active_rules, phase=s.phase or PHASE_NORMAL, phase_since_ms=s.phase_since_ms,
        overdue_since_ms=s.overdue_since_ms, fresh_start_ms=s.fresh_start_ms, told=s.told, held_keys=s.held_keys,
        silence_alerted_ms=s.silence_alerted_ms, campaigns=s.campaigns,
        due_ms=s.due_ms, told_status=s.told_status or s.status,
        last_producer=s.last_producer, pending_action=s.pending_action,
    )
