"""Reading what the Apache Kafka tier asserts on: a topic whole, and what the scorer stored in Redis."""

from __future__ import annotations

import importlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from services import stored_values
from services.settings import CommonSettings
from tests.helpers import wait_until


async def partitions_of(bootstrap_servers: str, topic: str) -> list[int]:
    """The topic's partitions, once the broker asked knows the topic (a topic just created reaches
    every broker's metadata a moment later)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()

    async def described() -> list[int] | None:
        [found] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in found["partitions"]) or None

    try:
        return await wait_until(described, 30, f"the topic {topic} in the cluster's metadata")
    finally:
        await admin.close()


async def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 60) -> list[ConsumerRecord]:
    """Every record of `topic` from its start to the end it has now, in partition-offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap_servers, topic)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)

        async def read() -> bool:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(records)
            return all([await consumer.position(tp) >= ends[tp] for tp in tps])

        await wait_until(read, timeout_s, f"{topic} read to its end {ends}")
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.partition, r.offset))


# ---------------------------------------------------------------- what the scorer stored in Redis
# The tier asserts on the scorer's stored data. Two layouts exist: one key per customer and one
# offsets hash per group (this branch's scorer), and the per-partition layout of issue 18 (states and
# offsets in hashes under each partition's hash tag, snapshots computed at read time). These readers
# take whichever the code in place writes, so the tests stand across that change.


def _per_partition(settings: CommonSettings) -> bool:
    return hasattr(settings.keys, "partition")


async def stored_states(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict[str, Any]]:
    """customer -> the scorer's stored state (JSON document); customers without one left out."""
    if _per_partition(settings):
        partition_of = importlib.import_module("services.partitions").partition_of
        reader = importlib.import_module("services.snapshots").CustomerReader(redis, settings.keys, settings.partitions)
        found: dict[str, dict[str, Any]] = await reader.states(
            [(c, partition_of(c, settings.partitions)) for c in customers])
        return found
    raws = await redis.mget([settings.keys.state(c) for c in customers])
    return {c: stored_values.loads(r) for c, r in zip(customers, raws, strict=True) if r}


async def stored_snapshots(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict[str, Any]]:
    """customer -> its snapshot as GET /v1/customers/{id} serves it; customers without one left out."""
    if _per_partition(settings):
        read = importlib.import_module("tests.helpers").stored_snapshots
        snapshots: dict[str, dict[str, Any]] = await read(redis, settings, customers)
        return snapshots
    raws = await redis.mget([settings.keys.snapshot(c) for c in customers])
    return {c: stored_values.loads(r) for c, r in zip(customers, raws, strict=True) if r}


async def stored_offsets(redis: Redis, settings: CommonSettings, group: str, topic: str) -> dict[int, int]:
    """partition -> the last offset of `topic` whose effects the scorer (app id `group`) stored."""
    if _per_partition(settings):
        keys = [settings.keys.partition(p).offsets() for p in range(settings.partitions)]
        raws = [await redis.hget(key, topic) for key in keys]
        return {p: int(raw) for p, raw in enumerate(raws) if raw is not None}
    stored = await redis.hgetall(settings.keys.offsets(group))
    return {int(tp.rsplit("/", 1)[1]): int(offset) for tp, offset in stored.items() if tp.rsplit("/", 1)[0] == topic}
