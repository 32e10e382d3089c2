"""Records of the events and profiles topics as the scorer's core takes them.

A record that cannot be decoded (not an envelope, outside the contract, nested too deeply) is not an
error of the stream: it becomes an `Item` carrying the reason, and goes to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from scorer.core.state import ContactEvent
from scorer.envelopes import REFUSALS, DecodedEvent, DecodedProfile, decode_events, decode_profiles
from services.contract import ProfileEnvelope

DECODE_STAGE = "scorer.decode"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


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


def _tombstone(record: Record) -> Item:
    try:
        assert record.key is not None
        return Item(record, Decoded(_customer_of_key(record.key), erase=True))
    except REFUSALS as exc:  # UnicodeError is a ValueError
        return Item(record, error=exc)


def decode_batch(records: list[Record], events_topic: str, profiles_topic: str) -> list[Item]:
    """Each record decoded, in order (scorer/envelopes.py: a batch of values at a time, msgspec first);
    an undecodable one carries its error (it goes to the dead-letter topic). Never raises."""
    events = [i for i, r in enumerate(records) if r.topic == events_topic]
    profiles = [i for i, r in enumerate(records) if r.topic == profiles_topic
                and not (r.value is None and r.key)]
    items: list[Item | None] = [None] * len(records)
    for i, answer in zip(events, decode_events([records[i].value for i in events]), strict=True):
        if isinstance(answer, DecodedEvent):
            decoded = Decoded(answer.event.customer_id, event=answer.event, received_at_ms=answer.received_at_ms)
            items[i] = Item(records[i], decoded)
        else:
            items[i] = Item(records[i], error=answer.error)
    for i, profile in zip(profiles, decode_profiles([records[i].value for i in profiles]), strict=True):
        if isinstance(profile, DecodedProfile):
            decoded = Decoded(profile.customer_id, profile=profile.profile, updated_at_ms=profile.updated_at_ms)
            items[i] = Item(records[i], decoded)
        else:
            items[i] = Item(records[i], error=profile.error)
    for i, record in enumerate(records):
        if items[i] is not None:
            continue
        if record.topic == profiles_topic:
            items[i] = _tombstone(record)
        else:
            items[i] = Item(record, error=ValueError(f"unexpected topic {record.topic!r}"))
    return [item for item in items if item is not None]


def decode(record: Record, events_topic: str, profiles_topic: str) -> Item:
    """One record decoded (`decode_batch` of one)."""
    return decode_batch([record], events_topic, profiles_topic)[0]


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
