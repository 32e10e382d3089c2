"""The one way an event gets in: validate with the contract, claim its id, publish, confirm.

Every intake uses it — `POST /v1/events`, the provider adapters, the Kafka intake consumer and
`fatigue import` — so what one accepts, all accept, and an event id is stored once whichever way
it came:

1. `check` — `ingest.validation.check_events`: the contract (services/contract.py) plus the
   future-skew rule, with the time passed in.
2. `accept` — duplicates within the batch dropped (first occurrence kept); the remaining ids
   claimed atomically in Redis (`DedupStore.claim`); the claimed events published as
   `EventEnvelope`s keyed by customer id, acks=all; the claims confirmed after the
   acknowledgement, or released when the publish failed (so a retry is not a duplicate).

Each event's claim follows what became of its record (services/kafka_errors.py): acknowledged ->
confirmed (a retry finds it a duplicate and does not send it again); refused for its own properties
(too large for the events topic) -> released and returned in `Accepted.refused`, never retried;
not sent because of an outage -> released, and `accept` raises.

`accept` raises `BrokerUnavailable` (an outage: the events not acknowledged may be retried, those
acknowledged count as duplicates then), `BrokerMisconfigured` (the brokers refuse this client or
topic) and `EventsInFlight` (another writer is publishing some of these ids right now: nothing was
published, retry shortly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ingest.dedup import DedupStore
from ingest.publisher import Record
from ingest.validation import CheckedBatch, check_events, first_occurrences
from services.contract import EventEnvelope, EventIn, encode
from services.errors import FatigueError, RecordRefused
from services.kafka import Sent


class Publisher(Protocol):
    async def publish_each(self, topic: str, records: Sequence[Record]) -> Sent:
        """What became of each record (acks=all): acknowledged, refused, or not sent (`failure`)."""
        ...


class EventsInFlight(FatigueError):
    """Some event ids of a batch are being published by another writer right now; nothing was published."""

    retriable = True
    operator_action = "Retry shortly: the ids then count as accepted or as duplicates."

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} event ids are being stored by another writer right now")
        self.count = count


@dataclass(frozen=True)
class Accepted:
    """What `accept` stored: `events` were published; `duplicates` were not (already stored, or
    repeated within the batch)."""

    events: list[EventIn]
    duplicates: int
    refused: list[tuple[EventIn, RecordRefused]] = field(default_factory=list)
    """Events the event log refused for their own properties (too large): not stored, not to be retried."""
    positions: dict[int, int] = field(default_factory=dict)
    """partition -> the highest offset of the events topic the stored events reached."""

    @property
    def count(self) -> int:
        return len(self.events)


def envelope_records(events: Sequence[EventIn], producer: str, received_at: datetime) -> list[Record]:
    """The records for the events topic: key = customer id, value = the envelope JSON."""
    return [
        (event.customer_id.encode(), encode(EventEnvelope(producer=producer, received_at=received_at, event=event)))
        for event in events
    ]


class AcceptPath:
    """Validate, de-duplicate and publish events to the events topic (see the module docstring)."""

    def __init__(self, publisher: Publisher, dedup: DedupStore, *, topic: str, max_future_skew_s: float,
                 claim_wait_s: float) -> None:
        self._publisher = publisher
        self._dedup = dedup
        self._topic = topic
        self._max_future_skew_s = max_future_skew_s
        self._claim_wait_s = claim_wait_s

    def check(self, items: Sequence[Any], *, now: datetime) -> CheckedBatch:
        """Each item validated on its own: the valid events (with their index) and the rejections."""
        return check_events(items, now=now, max_future_skew_s=self._max_future_skew_s)

    async def accept(self, events: Sequence[EventIn], *, producer: str, received_at: datetime) -> Accepted:
        """Store the events not stored before for `producer`; see the module docstring for errors."""
        unique, repeats = first_occurrences(list(events))
        claim = await self._dedup.claim(producer, [event.event_id for event in unique], wait_s=self._claim_wait_s)
        if claim.in_flight:
            await self._dedup.release(producer, claim.claimed)
            raise EventsInFlight(len(claim.in_flight))
        claimed = set(claim.claimed)
        fresh = [event for event in unique if event.event_id in claimed]
        try:
            sent = await self._publisher.publish_each(self._topic, envelope_records(fresh, producer, received_at))
        except BaseException:
            await asyncio.shield(self._dedup.release(producer, claim.claimed))
            raise
        stored = [fresh[i] for i in sorted(sent.acked)]
        await self._settle_claims(producer, claim.claimed, stored)
        if sent.failure is not None:
            raise sent.failure
        return Accepted(events=stored, duplicates=repeats + len(claim.duplicates),
                        refused=[(fresh[i], error) for i, error in sorted(sent.refused.items())],
                        positions=dict(sent.positions))

    async def _settle_claims(self, producer: str, claimed: list[str], stored: list[EventIn]) -> None:
        """Confirm the claims of the stored events, release the others (shielded: it must happen)."""
        stored_ids = {event.event_id for event in stored}
        await asyncio.shield(self._dedup.confirm(producer, [i for i in claimed if i in stored_ids]))
        await asyncio.shield(self._dedup.release(producer, [i for i in claimed if i not in stored_ids]))
