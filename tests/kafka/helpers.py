"""Reading what is on a topic of the Apache Kafka tier, whole, to assert on data."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

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
