"""Topic values decoded into what the scorer runs, a batch at a time: msgspec first, pydantic when it declines.

    decode_events(values)   -> [DecodedEvent | Undecodable, ...]   one per value, in order
    decode_profiles(values) -> [DecodedProfile | Undecodable, ...]

The scorer must not trust the topics (a producer can write to them directly): a record that does
not pass the contract comes back as `Undecodable` carrying the error, for the dead-letter topic.
Every value is decoded by the fast path of services/contract_fast.py; whatever it declines (an
invalid record, or a valid one in an unusual form) is decoded by the pydantic models of
services/contract.py exactly as before, so acceptance, the decoded values and the error of a refused
record are pydantic's (tests/scorer/test_decoding.py checks it against pydantic alone). Neither
function raises for any value.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from pydantic import ValidationError

from scorer.core.state import ContactEvent
from scorer.history import contact_event
from services.contract import EventEnvelope, ProfileEnvelope, to_ms
from services.contract_fast import FastEvent, FastProfile, fast_event, fast_profile, profile_values


class DecodedEvent(msgspec.Struct, frozen=True):
    """A valid events-topic record."""

    event: ContactEvent
    """The event in the core's units (its `customer_id` is the customer the record is for)."""
    received_at_ms: int
    """When the intake accepted it (the envelope's `received_at`), epoch ms."""


class DecodedProfile(msgspec.Struct, frozen=True):
    """A valid profiles-topic record (not a tombstone: a record without a value is the caller's)."""

    customer_id: str
    profile: dict[str, object]
    """The profile as the core keeps it: `ProfileIn.model_dump(exclude_none=True, mode="json")`."""
    updated_at_ms: int
    """When the profile was changed (the envelope's `updated_at`), epoch ms."""


class Undecodable(msgspec.Struct, frozen=True):
    """A record that is not a valid envelope; it goes to the dead-letter topic with `error`."""

    error: Exception
    """What pydantic raised (a ValidationError naming the field, mostly; ValueError for no value)."""


REFUSALS = (ValidationError, ValueError, TypeError, OverflowError, RecursionError)
"""What decoding one record can raise: that record is undecodable, the batch goes on."""


def decode_events(values: Sequence[bytes | None]) -> list[DecodedEvent | Undecodable]:
    """Each events-topic value (an EventEnvelope as JSON bytes) decoded, in order."""
    out: list[DecodedEvent | Undecodable] = []
    for value in values:
        fast = None if value is None else fast_event(value)
        out.append(_from_fast_event(fast) if fast is not None else _event_by_pydantic(value))
    return out


def decode_profiles(values: Sequence[bytes | None]) -> list[DecodedProfile | Undecodable]:
    """Each profiles-topic value (a ProfileEnvelope as JSON bytes) decoded, in order. A tombstone
    (None: the customer was erased) is Undecodable here: the caller reads the customer from its key."""
    out: list[DecodedProfile | Undecodable] = []
    for value in values:
        fast = None if value is None else fast_profile(value)
        out.append(_from_fast_profile(fast) if fast is not None else _profile_by_pydantic(value))
    return out


def _from_fast_event(fast: FastEvent) -> DecodedEvent:
    envelope = fast.envelope
    event = envelope.event
    return DecodedEvent(
        ContactEvent(
            event_id=event.event_id,
            type=event.type,
            customer_id=event.customer_id,
            channel=event.channel,
            occurred_at_ms=fast.occurred_at_ms,
            kind=event.kind,
            in_reply_to=event.in_reply_to,
            rep_id=event.rep_id,
            campaign_id=event.campaign_id,
            producer=envelope.producer,
        ),
        fast.received_at_ms,
    )


def _from_fast_profile(fast: FastProfile) -> DecodedProfile:
    envelope = fast.envelope
    return DecodedProfile(envelope.customer_id, profile_values(envelope.profile), fast.updated_at_ms)


def _event_by_pydantic(value: bytes | None) -> DecodedEvent | Undecodable:
    try:
        if value is None:
            raise ValueError("record has no value")
        envelope = EventEnvelope.model_validate_json(value)
        return DecodedEvent(contact_event(envelope.event, envelope.producer), to_ms(envelope.received_at))
    except REFUSALS as exc:  # UnicodeError is a ValueError
        return Undecodable(exc)


def _profile_by_pydantic(value: bytes | None) -> DecodedProfile | Undecodable:
    try:
        if value is None:
            raise ValueError("record has no value")
        envelope = ProfileEnvelope.model_validate_json(value)
        profile = envelope.profile.model_dump(exclude_none=True, mode="json")
        return DecodedProfile(envelope.customer_id, profile, to_ms(envelope.updated_at))
    except REFUSALS as exc:
        return Undecodable(exc)
