"""The scorer's edge fed directly (its Processor on a real Redis, the Kafka side replaced by records
built here): for API and command tests that need what the real scorer writes, each customer in the
partition Kafka's partitioner puts it in (services/partitions.py), as the API looks for it."""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry

from scorer.clock import ManualClock
from scorer.decoding import Record
from scorer.partition_store import PartitionStore, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.reroute import MemoryRecordRouter, Misrouted, Rerouting
from services.actions import Action
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, encode, to_ms
from services.deadletter import MemoryDeadLetterSink
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.partitions import partition_of
from services.policy.model import Policy, default_policy
from services.redisio import RedisClient

EVENTS, PROFILES = "ev", "pr"


class ScorerFeed:
    def __init__(self, redis: RedisClient, keys: RedisKeys, partitions: int, now: datetime,
                 policy: Policy | None = None, store: PartitionStore | None = None) -> None:
        self.now = now
        self.partitions = partitions
        self.clock = ManualClock(to_ms(now))
        self.actions = MemoryActionPublisher()
        chosen = policy or default_policy()
        self.metrics = ScorerMetrics(CollectorRegistry())
        self.router = MemoryRecordRouter()
        """What the processor re-published to other partitions (`deliver` puts it there)."""
        rerouting = Rerouting(partitions, self.router, lambda topic, n: self.metrics.rerouted.labels(topic).inc(n))
        self.processor = Processor(store or RedisPartitionStore(redis, keys), self.actions, lambda: chosen,
                                   self.clock, self.metrics, events_topic=EVENTS, profiles_topic=PROFILES,
                                   dead_letters=MemoryDeadLetterSink(), rerouting=rerouting)
        self._offsets: dict[tuple[str, int], int] = {}

    def partition(self, customer_id: str) -> int:
        return partition_of(customer_id, self.partitions)

    def _record(self, topic: str, customer_id: str, value: bytes | None, partition: int | None = None) -> Record:
        """The next record of `topic` in the customer's partition, or in `partition` (a misrouted one)."""
        partition = self.partition(customer_id) if partition is None else partition
        offset = self._offsets.get((topic, partition), -1) + 1
        self._offsets[(topic, partition)] = offset
        return Record(topic, partition, offset, value, customer_id.encode(), to_ms(self.now), (("h", b"1"),))

    def profile(self, customer_id: str, partition: int | None = None, **fields: object) -> Record:
        envelope = ProfileEnvelope(customer_id=customer_id, updated_at=self.now,
                                   profile=ProfileIn.model_validate(fields))
        return self._record(PROFILES, customer_id, encode(envelope), partition)

    def tombstone(self, customer_id: str, partition: int | None = None) -> Record:
        return self._record(PROFILES, customer_id, None, partition)

    def delivered(self, misrouted: list[Misrouted]) -> list[Record]:
        """The re-published records as the brokers append them to their partitions (next offsets there)."""
        found = []
        for item in misrouted:
            offset = self._offsets.get((item.record.topic, item.partition), -1) + 1
            self._offsets[(item.record.topic, item.partition)] = offset
            r = item.record
            found.append(Record(r.topic, item.partition, offset, r.value, r.key, r.timestamp_ms, r.headers))
        return found

    def event(self, customer_id: str, days_ago: float, type_: str = "touch", kind: str | None = None,
              channel: str = "phone", event_id: str | None = None, partition: int | None = None,
              **extra: object) -> Record:
        n = sum(self._offsets.values()) + len(self._offsets)
        body = EventIn.model_validate({"event_id": event_id or f"e{n}", "type": type_, "customer_id": customer_id,
                                       "channel": channel, "kind": kind,
                                       "occurred_at": (self.now - timedelta(days=days_ago)).isoformat(), **extra})
        return self._record(EVENTS, customer_id, encode(EventEnvelope(producer="p", received_at=self.now, event=body)),
                            partition)

    async def process(self, records: list[Record]) -> list[Action]:
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        new = [p for p in by_partition if p not in self.processor.owned()]
        if new:
            await self.processor.assign(new)
        actions = []
        for partition, run in sorted(by_partition.items()):
            actions += await self.processor.process(partition, run)
        return actions

    async def fire_due(self) -> list[Action]:
        fired = []
        for partition in self.processor.owned():
            fired += await self.processor.fire_due(partition)
        return fired
