"""Records found in a partition their customer is not in: re-published, unchanged, to the customer's.

A customer's state lives in the partition Kafka's default partitioner puts the customer id in under the
recorded partition count (murmur2: services/partitions.py); the API looks for it there. A record found
in another partition — from a producer with another partitioner (librdkafka's default is
`consistent_random`, CRC32), from a producer that still knew the old count right after the topics grew
(`fatigue repartition`), or written to an explicit partition — would create the customer's state where
nobody reads it. So the scorer does not apply it: it produces the record unchanged (key, value,
headers, timestamp) to the same topic with the customer's partition named explicitly, and commits the
offset of the partition it was found in only once the brokers acknowledged the copy
(scorer/processor.py: after the batch's actions, before its commit). A crash in between re-publishes it
once more at restart, which the customer's state absorbs: an event is de-duplicated by its event_id,
a profile applied twice is the same profile. A copy the brokers refuse for its own properties (too large
for the topic now) is dead-lettered (stage `scorer.reroute`) and the stream goes on.

Which partition is the customer's is decided by the decoded customer id (what the state is keyed by),
not by the record's key. Undecodable records are dead-lettered where they are, as before.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from scorer.decoding import Record
from services.deadletter import DeadLetter, DeadLetterSink
from services.errors import RecordRefused
from services.kafka import AckedProducer, Placement
from services.partitions import partition_of
from services.settings import CommonSettings

log = logging.getLogger(__name__)

REROUTE_STAGE = "scorer.reroute"
LOG_EVERY_MS = 60_000
"""A partition's re-published records are logged at most once a minute (they are counted always)."""
CACHED_CUSTOMERS = 1 << 16
"""Customers whose partition is remembered: murmur2 in Python costs ~10-20 µs a key here, a cache hit under 1."""


@functools.lru_cache(maxsize=CACHED_CUSTOMERS)
def _partition_of(customer_id: str, partitions: int) -> int:
    return partition_of(customer_id, partitions)


@dataclass(frozen=True, slots=True)
class Misrouted:
    """A record found in a partition its customer is not in, and the customer's partition."""

    record: Record
    partition: int

    @property
    def identity(self) -> str:
        """The same for every attempt to re-publish one record (what a retry must not send twice)."""
        return f"{self.record.topic}|{self.record.partition}|{self.record.offset}"


class RecordRouter(Protocol):
    async def reroute(self, records: list[Misrouted]) -> None:
        """Return once the brokers acknowledged each record in its customer's partition (or, refused for its
        own properties, dead-lettered); raise BrokerUnavailable (retry) or BrokerMisconfigured otherwise."""
        ...


def _ignore(_: RecordRefused) -> None:
    return None


class KafkaRecordRouter:
    """Re-publishes through an AckedProducer (acks=all): a retry after an outage does not send again
    what the brokers acknowledged (by source topic, partition and offset)."""

    def __init__(self, settings: CommonSettings, dead_letters: DeadLetterSink,
                 on_refused: Callable[[RecordRefused], None] = _ignore) -> None:
        self._producer = AckedProducer(settings, "fatigue-scorer-reroute", "re-publishing")
        self._dead_letters = dead_letters
        self._on_refused = on_refused

    async def reroute(self, records: list[Misrouted]) -> None:
        by_topic: dict[str, list[Misrouted]] = {}
        for item in records:
            by_topic.setdefault(item.record.topic, []).append(item)
        for topic, items in by_topic.items():
            refused = await self._producer.send_all(
                topic, [(i.record.key, i.record.value) for i in items], [i.identity for i in items],
                [Placement(i.partition, i.record.headers, i.record.timestamp_ms) for i in items])
            await self._dead_letter(items, refused)

    async def _dead_letter(self, items: list[Misrouted], refused: dict[int, RecordRefused]) -> None:
        if not refused:
            return
        now_ms = int(time.time() * 1000)
        letters = [DeadLetter.of(REROUTE_STAGE, topic=items[i].record.topic, partition=items[i].record.partition,
                                 offset=items[i].record.offset, key=items[i].record.key, value=items[i].record.value,
                                 error=error, failed_at_ms=now_ms, timestamp_ms=items[i].record.timestamp_ms)
                   for i, error in sorted(refused.items())]
        await self._dead_letters.publish(letters)
        for i, error in sorted(refused.items()):
            self._on_refused(error)
            record = items[i].record
            log.warning("record %s/%d@%d could not be re-published to partition %d, dead-lettered: %s",
                        record.topic, record.partition, record.offset, items[i].partition, error)

    async def close(self) -> None:
        await self._producer.close()


@dataclass
class MemoryRecordRouter:
    """Keeps what it was asked to re-publish: for tests of the processor."""

    sent: list[Misrouted] = field(default_factory=list)

    async def reroute(self, records: list[Misrouted]) -> None:
        self.sent.extend(records)


class Rerouting:
    """Where each customer's records belong under `partitions`, and the records re-published there:
    counted per topic (`count`), logged at most once per partition and LOG_EVERY_MS."""

    def __init__(self, partitions: int, router: RecordRouter, count: Callable[[str, int], None]) -> None:
        self.partitions = partitions
        self.router = router
        self._count = count
        self._logged_at_ms: dict[int, int] = {}
        self._unlogged: Counter[int] = Counter()

    def elsewhere(self, partition: int, customer_id: str) -> int | None:
        """The customer's partition when it is not `partition`, else None."""
        belongs = _partition_of(customer_id, self.partitions)
        return None if belongs == partition else belongs

    def done(self, partition: int, records: list[Misrouted], now_ms: int) -> None:
        """After the commit: count what was re-published from `partition`, and say so now and then."""
        if not records:
            return
        for topic, n in Counter(item.record.topic for item in records).items():
            self._count(topic, n)
        self._unlogged[partition] += len(records)
        if now_ms - self._logged_at_ms.get(partition, -LOG_EVERY_MS) < LOG_EVERY_MS:
            return
        self._logged_at_ms[partition] = now_ms
        log.warning("partition %d: %d records of customers of other partitions re-published to theirs (since the "
                    "last such line; e.g. customer key %r to partition %d): a producer does not partition by murmur2 "
                    "of the customer id, or still uses an old partition count (docs/events.md#partitioning)",
                    partition, self._unlogged.pop(partition), _key(records[0].record), records[0].partition)


def _key(record: Record) -> str:
    return "" if record.key is None else record.key[:64].decode("utf-8", "replace")
