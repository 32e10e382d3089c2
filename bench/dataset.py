"""The events every stream benchmark consumes, and the Kafka and Redis chores around them.

`make_bodies` is a synthetic history as upstream systems post it (contract v1 JSON): touches (70%)
and responses (30%) on several channels, spread evenly in time over the last `days` days and over
`customers` customers, in time order. `Dataset` holds them encoded exactly as the API publishes
them (`ingest.accept.envelope_records`: key = customer id, value = the envelope JSON), with the
partition Kafka's default partitioner gives each key, so the in-memory benchmarks see the same
records in the same partitions as the ones reading the broker.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from redis.asyncio import Redis

from ingest.accept import envelope_records
from services.contract import EventIn
from services.kafka import ensure_topics
from services.settings import CommonSettings

CHANNELS = ("email", "sms", "phone", "wecom", "meeting")
TOUCH_KINDS = ("promo", "value", "service")
RESPONSE_KINDS = ("open", "click", "reply")
PRODUCER = "bench"


def make_bodies(events: int, customers: int, *, days: float = 30, seed: int = 1, now: datetime | None = None,
                id_prefix: str = "e", customer_prefix: str = "c", every_customer: bool = False) -> list[dict[str, Any]]:
    """`events` contract-v1 event objects over `customers` customers and the last `days` days
    (customers drawn at random, or in turn with `every_customer`: each gets events // customers)."""
    rng = random.Random(seed)
    end = (now or datetime.now(UTC)) - timedelta(minutes=1)
    start = end - timedelta(days=days)
    step = (end - start) / max(1, events)
    out = []
    for i in range(events):
        touch = rng.random() < 0.7
        customer = i % customers if every_customer else rng.randrange(customers)
        out.append({
            "event_id": f"{id_prefix}{i}", "type": "touch" if touch else "response",
            "customer_id": f"{customer_prefix}{customer}", "channel": rng.choice(CHANNELS),
            "occurred_at": (start + step * i).isoformat(),
            "kind": rng.choice(TOUCH_KINDS if touch else RESPONSE_KINDS),
        })
    return out


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner picks for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Dataset:
    bodies: list[dict[str, Any]]
    records: list[tuple[int, bytes, bytes]]
    """(partition, key, envelope JSON) in time order."""
    customers: int
    partitions: int

    @classmethod
    def make(cls, events: int, customers: int, partitions: int, *, days: float = 30, seed: int = 1,
             id_prefix: str = "e", customer_prefix: str = "c", every_customer: bool = False) -> Dataset:
        bodies = make_bodies(events, customers, days=days, seed=seed, id_prefix=id_prefix,
                             customer_prefix=customer_prefix, every_customer=every_customer)
        received = datetime.now(UTC)
        encoded = envelope_records([EventIn.model_validate(b) for b in bodies], PRODUCER, received)
        records = [(partition_of(key, partitions), key, value or b"") for key, value in encoded]
        return cls(bodies, records, customers, partitions)

    def __len__(self) -> int:
        return len(self.records)

    def per_partition(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for partition, _, _ in self.records:
            counts[partition] = counts.get(partition, 0) + 1
        return counts


RETENTION = {"retention.ms": "604800000", "retention.bytes": "-1"}
"""Kafka's defaults (7 days, no size limit), given explicitly when the events topic is created: quixstreams
reads both (DescribeConfigs) for its changelog topics, and Tansu describes only the configs a topic was
created with (without them quixstreams stops with KeyError 'retention.ms')."""


async def create_topics(bootstrap: str, topic_prefix: str, partitions: int) -> CommonSettings:
    """The service's topics under `topic_prefix`, the events topic with its retention given (`RETENTION`)."""
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix, partitions=partitions)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.events_topic, partitions, 1, topic_configs=dict(RETENTION))])
    finally:
        await admin.close()
    await ensure_topics(settings)
    return settings


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[int, bytes, bytes]], *,
                  in_flight: int = 5000) -> None:
    """Write the records (acks=all), at most `in_flight` unacknowledged at a time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for partition, key, value in records:
            pending.append(await producer.send(topic, value=value, key=key, partition=partition))
            if len(pending) >= in_flight:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def delete_prefix(redis: Redis, prefix: str) -> int:
    """Delete every key under `prefix` (the bench's own runs only: never the whole database)."""
    deleted = 0
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            deleted += await redis.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


async def command_stats(redis: Redis) -> dict[str, int]:
    """INFO commandstats as {command: calls} (commands run inside MULTI and Lua scripts included)."""
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def stats_delta(after: dict[str, int], before: dict[str, int], own: dict[str, int] | None = None) -> dict[str, int]:
    own = own or {}
    delta = {k: v - before.get(k, 0) - own.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in delta.items() if v > 0}


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
