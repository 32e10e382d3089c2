"""Contract v1 decoded fast: msgspec mirrors of the Kafka envelopes, for the scorer's hot path.

The scorer decodes every record of the events and profiles topics; with pydantic
(services/contract.py) that cost ~30 µs of CPU an event (bench/decode.py, docs/performance.md). The
msgspec Structs below mirror the same contract (lengths, patterns, enums as Literals, unknown fields
forbidden at every level), so that what our own intakes write is parsed and validated in C; what
msgspec cannot express is checked here in Python with the contract's own functions (`check_moment`,
`attributes_json_size`, `iana_time_zones`) and rules (kind matches type, in_reply_to only on
responses; the bounds of `check_attributes` by `within_bounds`).

The fast path only ever *accepts*. `fast_event` and `fast_profile` return None whenever they refuse
an input or meet anything unusual — another timestamp form, emails or phones in a profile, a field
pydantic knows but ignores, a number msgspec will not read, a duplicate key it holds against the
first value — and the caller then asks pydantic, which accepts or gives the error (so a dead letter's
reason is pydantic's, unchanged). The outcome is therefore pydantic's for every input: by
construction where the fast path declines, and where it accepts, by the property tests of
tests/services/test_contract_fast.py (pydantic accepts too, with the same values).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

import msgspec

from services.contract import (
    EARLIEST_MOMENT,
    LATEST_MOMENT,
    MAX_ATTRIBUTES_BYTES,
    MAX_ATTRIBUTES_DEPTH,
    MAX_ATTRIBUTES_VALUES,
    MAX_SAFE_INTEGER,
    attributes_json_size,
    check_moment,
    iana_time_zones,
    to_ms,
)

# ---- the contract's constraints, as msgspec sees them (tests/services/test_contract_fast.py checks
# each against services/contract.py, so the two cannot drift apart unnoticed) ----

MAX_ID_CHARS = 200
MAX_TIME_ZONE_CHARS = 64

FreeId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
"""contract.FreeId: any non-empty string, at most 200 characters (code points, as pydantic counts)."""

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9._:@+\-]+\Z")]
"""contract.Identifier. msgspec runs Python's `re.search`, where `$` also matches before a final newline
(pydantic's Rust regex does not): `\\Z` keeps "c1\\n" refused, as pydantic refuses it."""

EventTypeName = Literal["touch", "response"]
ChannelName = Literal["email", "sms", "phone", "wechat", "wecom", "visit", "meeting", "push", "chat", "social",
                      "other"]
TouchKindName = Literal["value", "promo", "service", "transactional"]
ResponseKindName = Literal["reply", "open", "click", "call_answered", "meeting_attended", "unsubscribe",
                           "complaint", "bounce", "resubscribe"]
KindName = Literal[TouchKindName, ResponseKindName]
TierName = Literal["A", "B", "C"]
StageName = Literal["lead", "prospect", "intent", "negotiation", "onboarding", "customer", "loyal"]

_TOUCH_KINDS = frozenset(get_args(TouchKindName))
_RESPONSE_KINDS = frozenset(get_args(ResponseKindName))

_MOMENT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
"""The one timestamp form the fast path reads: what pydantic writes (`2026-11-23T09:00:00.270491Z`,
`...+08:00`), a strict subset of what both `parse_moment` (occurred_at) and pydantic's own datetime
parser (received_at, updated_at) accept, where the three agree on the instant. Lower-case t/z, a space,
more than 6 fraction digits, a leap second, unix numbers...: pydantic's to judge."""

_SURELY_IN_RANGE = (f"{EARLIEST_MOMENT.year + 1:04d}", f"{LATEST_MOMENT.year - 2:04d}")
"""Years whose moments are in the contract's range whatever their offset (less than a day): the range
check is only run for the others."""

_SAFE_EXPANSION = 4.5
"""json.dumps of parsed JSON is at most 4.5 times the JSON text it came from: strings, integers and
literals never grow (escapes only shrink to what json.dumps writes), a float grows the most from 4
characters to 18 (1e15 -> 1000000000000000.0). So a record of at most MAX_ATTRIBUTES_BYTES / 4.5 bytes
cannot hold attributes over the bound, and their size is computed only for longer records."""
_SHORT_RECORD_BYTES = int(MAX_ATTRIBUTES_BYTES / _SAFE_EXPANSION)


class EventInFast(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """contract.EventIn; `occurred_at` stays the text (read by `moment_ms`)."""

    event_id: FreeId
    type: EventTypeName
    customer_id: Identifier
    channel: ChannelName
    occurred_at: str
    rep_id: FreeId | None = None
    campaign_id: FreeId | None = None
    kind: KindName | None = None
    in_reply_to: FreeId | None = None
    attributes: dict[str, Any] | None = None


class EventEnvelopeFast(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """contract.EventEnvelope. pydantic ignores unknown envelope fields; here they send the record to
    pydantic (never written by our producers, so never on the hot path)."""

    producer: str
    received_at: str
    event: EventInFast
    v: Literal[1] = 1


class ProfileInFast(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """contract.ProfileIn without identities: `emails` and `phones` (normalised by pydantic, and never
    written to the topic by the API) may only be null here; a list of them goes to pydantic."""

    tier: TierName | None = None
    stage: StageName | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=MAX_TIME_ZONE_CHARS)] | None = None
    owner_rep_id: FreeId | None = None
    do_not_contact: bool = False
    emails: None = None
    phones: None = None


class ProfileEnvelopeFast(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """contract.ProfileEnvelope (unknown fields: as EventEnvelopeFast)."""

    customer_id: Identifier
    updated_at: str
    profile: ProfileInFast
    v: Literal[1] = 1


class FastEvent(msgspec.Struct, frozen=True):
    """An events-topic record the fast path accepted: the envelope as decoded, and its two moments in
    epoch milliseconds (`contract.to_ms` of what pydantic would have parsed)."""

    envelope: EventEnvelopeFast
    occurred_at_ms: int
    received_at_ms: int


class FastProfile(msgspec.Struct, frozen=True):
    """A profiles-topic record the fast path accepted: the envelope, and `updated_at` in epoch ms."""

    envelope: ProfileEnvelopeFast
    updated_at_ms: int


class Declined(Exception):
    """The fast path does not decide this record: pydantic does."""


_DECLINED = (msgspec.MsgspecError, Declined, ValueError, TypeError, OverflowError, RecursionError)
"""What makes the fast path hand a record to pydantic: msgspec's refusals (UnicodeDecodeError for bad
UTF-8 is a ValueError), the checks below, and whatever else a hostile record could raise in them."""

_EVENT_ENVELOPE = msgspec.json.Decoder(EventEnvelopeFast)
_PROFILE_ENVELOPE = msgspec.json.Decoder(ProfileEnvelopeFast)


def fast_event(value: bytes) -> FastEvent | None:
    """`value` decoded when it is an events-topic envelope in the common form; None: ask pydantic."""
    try:
        envelope = _EVENT_ENVELOPE.decode(value)
        event = envelope.event
        _check_kind(event)
        if event.attributes is not None:
            _check_attributes(event.attributes, len(value))
        return FastEvent(envelope, moment_ms(event.occurred_at), shared_moment_ms(envelope.received_at))
    except _DECLINED:
        return None


def fast_profile(value: bytes) -> FastProfile | None:
    """`value` decoded when it is a profiles-topic envelope in the common form; None: ask pydantic."""
    try:
        envelope = _PROFILE_ENVELOPE.decode(value)
        zone = envelope.profile.timezone
        if zone is not None and zone not in iana_time_zones():
            raise Declined(zone)
        return FastProfile(envelope, shared_moment_ms(envelope.updated_at))
    except _DECLINED:
        return None


def profile_values(profile: ProfileInFast) -> dict[str, object]:
    """The profile as pydantic dumps it (`ProfileIn.model_dump(exclude_none=True, mode="json")`): the
    fields in their declared order, those that are None left out."""
    values: dict[str, object] = {}
    for name, value in (("tier", profile.tier), ("stage", profile.stage), ("timezone", profile.timezone),
                        ("owner_rep_id", profile.owner_rep_id), ("do_not_contact", profile.do_not_contact)):
        if value is not None:
            values[name] = value
    return values


def moment_ms(text: str) -> int:
    """Epoch ms of a timestamp in the form `_MOMENT` within the contract's range; Declined otherwise."""
    if not _MOMENT.fullmatch(text):
        raise Declined(text)
    moment = datetime.fromisoformat(text)
    if not _SURELY_IN_RANGE[0] <= text[:4] <= _SURELY_IN_RANGE[1]:
        check_moment(moment)
    return to_ms(moment)


@lru_cache(maxsize=1024)
def shared_moment_ms(text: str) -> int:
    """`moment_ms`, remembered: the envelopes of one intake batch share their `received_at`."""
    return moment_ms(text)


def _check_kind(event: EventInFast) -> None:
    """contract.EventIn._kind_matches_type."""
    if event.type == "touch":
        if event.in_reply_to is not None or (event.kind is not None and event.kind not in _TOUCH_KINDS):
            raise Declined(event.kind)
    elif event.kind is not None and event.kind not in _RESPONSE_KINDS:
        raise Declined(event.kind)


def _check_attributes(attributes: dict[str, Any], record_bytes: int) -> None:
    """contract.EventIn's attribute validators: bounded shape, and size as JSON (skipped when the record
    is too short to reach it, see _SAFE_EXPANSION)."""
    if not within_bounds(attributes):
        raise Declined("attributes")
    if record_bytes > _SHORT_RECORD_BYTES and attributes_json_size(attributes) > MAX_ATTRIBUTES_BYTES:
        raise Declined("attributes")


def within_bounds(attributes: dict[str, Any]) -> bool:
    """True only where `contract.check_attributes` passes (nesting, count of values, numbers), at a
    seventh of its cost: it keeps no path for an error message, since any False goes to pydantic. The
    values are what msgspec decodes JSON into (keys always strings, no subclasses of the types)."""
    pending: list[tuple[Any, int]] = [(attributes, 0)]
    values = 0
    while pending:
        item, depth = pending.pop()
        values += len(item)
        if depth >= MAX_ATTRIBUTES_DEPTH or values > MAX_ATTRIBUTES_VALUES:
            return False
        for child in item.values() if type(item) is dict else item:
            kind = type(child)
            if kind is dict or kind is list:
                pending.append((child, depth + 1))
            elif not (kind is str or kind is bool or child is None or _plain_number(child)):
                return False
    return True


def _plain_number(value: Any) -> bool:
    """An int within the safe integers or a finite float (not NaN, not Infinity)."""
    if type(value) is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return type(value) is float and value - value == 0
