"""Reading what is on a topic of the Apache Kafka tier, whole, to assert on data."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from tests.helpers import wait_until


async def partitions_of(bootstrap_servers: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["partitions"], f"no topic {topic}: {described}"
    return sorted(p["partition"] for p in described["partitions"])


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
