"""Records of the events and profiles topics as the scorer's core takes them.

A record that cannot be decoded (not an envelope, outside the contract, nested too deeply) is not an
error of the stream: it becomes an `Item` carrying the reason, and goes to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from scorer.core.state import ContactEvent
from scorer.history import contact_event
from services.contract import EventEnvelope, ProfileEnvelope, to_ms

DECODE_STAGE = "scorer.decode"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    customer_id: str
    event: ContactEvent | None = None
    profile: dict[str, object] | None = None
    received_at_ms: int | None = None
    updated_at_ms: int = 0
    """A profile change: when it was made (its envelope's `updated_at`, the moment of the timeline it is)."""
    erase: bool = False
    """A tombstone on the profiles topic: the customer was erased (DELETE /v1/customers/{id})."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record of a batch: decoded, or the reason it goes to the dead-letter topic instead."""

    record: Record
    decoded: Decoded | None = None
    error: BaseException | None = None
    stage: str = DECODE_STAGE


def _customer_of_key(key: bytes) -> str:
    """The customer id a record is keyed by; ValueError when it is not one (the record is dead-lettered)."""
    customer_id = key.decode("utf-8")
    ProfileEnvelope.model_validate({"customer_id": customer_id, "updated_at": "2000-01-01T00:00:00Z", "profile": {}})
    return customer_id


def decode(record: Record, events_topic: str, profiles_topic: str) -> Item:
    """Decode one record; an undecodable one carries its error (it goes to the dead-letter topic)."""
    try:
        if record.value is None and record.topic == profiles_topic and record.key:
            return Item(record, Decoded(_customer_of_key(record.key), erase=True))
        if record.value is None:
            raise ValueError("record has no value")
        if record.topic == events_topic:
            env = EventEnvelope.model_validate_json(record.value)
            return Item(record, Decoded(env.event.customer_id, event=contact_event(env.event, env.producer),
                                        received_at_ms=to_ms(env.received_at)))
        if record.topic == profiles_topic:
            penv = ProfileEnvelope.model_validate_json(record.value)
            profile = penv.profile.model_dump(exclude_none=True, mode="json")
            return Item(record, Decoded(penv.customer_id, profile=profile, updated_at_ms=to_ms(penv.updated_at)))
        raise ValueError(f"unexpected topic {record.topic!r}")
    except (ValidationError, ValueError, RecursionError, OverflowError) as exc:  # UnicodeError is a ValueError
        return Item(record, error=exc, stage=DECODE_STAGE)


def decode_batch(records: list[Record], events_topic: str, profiles_topic: str) -> list[Item]:
    return [decode(r, events_topic, profiles_topic) for r in records]


def in_event_time(arrived: list[Decoded]) -> list[Decoded]:
    """One customer's records of a batch: the events between two profile changes in the order they
    happened (stable for equal times), the profile changes where they came. What arrives together is
    evaluated in event time, as if it had come in order."""
    ordered: list[Decoded] = []
    run: list[Decoded] = []
    for decoded in arrived:
        if decoded.event is not None:
            run.append(decoded)
            continue
        ordered += sorted(run, key=_occurred_at)
        run = []
        ordered.append(decoded)
    return ordered + sorted(run, key=_occurred_at)


def _occurred_at(decoded: Decoded) -> int:
    assert decoded.event is not None
    return decoded.event.occurred_at_ms
