"""Reading what the Apache Kafka tier asserts on: a topic whole, and what the scorer stored in Redis."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

import tests.helpers
from scorer.core.state_codec import decode_state
from services.partitions import partition_of
from services.settings import CommonSettings
from services.snapshots import CustomerReader
from tests.helpers import wait_until


async def topic_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """Every topic's configs, once the broker asked knows them all (a topic created a moment ago is
    answered with an error and no entries by a broker its metadata has not reached yet)."""

    async def described() -> dict[str, dict[str, str]] | None:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        found = {name: {entry[0]: entry[1] for entry in entries}
                 for response in answers for (error, _m, _t, name, entries) in response.resources if not error}
        return found if all(found.get(t) for t in topics) else None

    return await wait_until(described, 30, f"the configs of {topics}")


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
# The tier asserts on the scorer's stored data, per partition (services/names.py `PartitionKeys`):
# states and offsets in hashes under each partition's hash tag, snapshots computed at read time.


async def stored_states(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict[str, Any]]:
    """customer -> the scorer's stored state (its JSON document, whatever format it is stored in);
    customers without one left out."""
    reader = CustomerReader(redis, settings.keys, settings.partitions)
    found = await reader.states([(c, partition_of(c, settings.partitions)) for c in customers])
    return {c: decode_state(payload).to_json() for c, payload in found.items()}


async def stored_snapshots(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict[str, Any]]:
    """customer -> its snapshot as GET /v1/customers/{id} serves it; customers without one left out."""
    return await tests.helpers.stored_snapshots(redis, settings, customers)


async def stored_offsets(redis: Redis, settings: CommonSettings, group: str, topic: str) -> dict[int, int]:
    """partition -> the last offset of `topic` whose effects the scorer stored (with the partition's
    state; `group`, the scorer's app id, names no key since the partition is the unit of state)."""
    keys = [settings.keys.partition(p).offsets() for p in range(settings.partitions)]
    raws = [await redis.hget(key, topic) for key in keys]
    return {p: int(raw) for p, raw in enumerate(raws) if raw is not None}
