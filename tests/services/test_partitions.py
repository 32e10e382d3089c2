"""Which partition a customer is in: the API reads the state where Kafka's default partitioner put the
customer's records. Pinned against the producers' own choices on a real broker: aiokafka (every
producer of this project) and librdkafka with `partitioner=murmur2_random` (what other systems must
set; its default, `consistent_random`, puts keys elsewhere)."""

from __future__ import annotations

import asyncio
import random
import string

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis

from services.kafka import make_producer
from services.names import RedisKeys
from services.partitions import PartitionCountChanged, RepartitionInProgress, check_partition_count, partition_of
from services.settings import CommonSettings

KEYS = ["acme-042", "cust-13", "a", "Z" * 200, "hist-014", "用户-7", "x@y.z", *(
    "".join(random.Random(n).choices(string.ascii_letters + string.digits + "._:@+-", k=1 + n % 40))
    for n in range(300))]


@pytest.mark.parametrize("partitions", [1, 3, 6, 12, 64])
def test_the_partition_is_the_default_partitioners_choice(partitions: int) -> None:
    every = list(range(partitions))
    for key in KEYS:
        assert partition_of(key, partitions) == DefaultPartitioner()(key.encode(), every, every), key


def test_a_topic_has_a_partition() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_of("c1", 0)


async def _topic(settings: CommonSettings, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


@pytest.mark.integration
async def test_aiokafka_puts_each_key_where_partition_of_says(common_settings: CommonSettings, unique: str) -> None:
    topic = f"t{unique}.partitions"
    await _topic(common_settings, topic, 12)
    producer = make_producer(common_settings, "tests")
    await producer.start()
    try:
        sent = await asyncio.gather(*[await producer.send(topic, key=k.encode(), value=b"x") for k in KEYS[:80]])
    finally:
        await producer.stop()
    assert [m.partition for m in sent] == [partition_of(k, 12) for k in KEYS[:80]]


@pytest.mark.integration
async def test_librdkafka_agrees_with_murmur2_random_and_not_by_default(
        common_settings: CommonSettings, unique: str) -> None:
    from confluent_kafka import Producer

    topic = f"t{unique}.rdkafka"
    await _topic(common_settings, topic, 12)

    def placed(partitioner: str | None) -> list[int]:
        config = {"bootstrap.servers": common_settings.kafka_bootstrap_servers}
        if partitioner is not None:
            config["partitioner"] = partitioner
        producer = Producer(config)
        found: dict[str, int] = {}
        for key in KEYS[:80]:
            producer.produce(topic, key=key.encode(), value=b"x",
                             on_delivery=lambda err, msg: found.__setitem__(msg.key().decode(), msg.partition()))
        assert producer.flush(30) == 0
        return [found[k] for k in KEYS[:80]]

    expected = [partition_of(k, 12) for k in KEYS[:80]]
    assert await asyncio.to_thread(placed, "murmur2_random") == expected
    assert await asyncio.to_thread(placed, None) != expected  # consistent_random: CRC32, elsewhere


@pytest.mark.integration
async def test_the_partition_count_is_recorded_and_a_changed_one_refused(redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"t{unique}:")
    await check_partition_count(redis_client, keys, 6)
    await check_partition_count(redis_client, keys, 6)
    assert await redis_client.hget(keys.meta(), "partitions") == "6"
    with pytest.raises(PartitionCountChanged, match="written for 6 partitions") as refused:
        await check_partition_count(redis_client, keys, 12)
    assert "repartition" in refused.value.operator_action
    await redis_client.hset(keys.meta(), "partitions", "six")
    with pytest.raises(PartitionCountChanged, match="not a number: 'six'"):
        await check_partition_count(redis_client, keys, 6)


def test_the_refusal_names_a_procedure_whose_command_exists() -> None:
    """PartitionCountChanged's operator action is the procedure, and its command is one `fatigue` has
    (it named `fatigue repartition` before there was one)."""
    from fatigue.cli import _parser

    action = PartitionCountChanged.operator_action
    for step in ("stop the intake", "let the scorers catch up", "stop them", "`fatigue repartition --partitions N`",
                 "restart every service with FATIGUE_PARTITIONS=N", "docs/operations.md#changing-the-partition-count"):
        assert step in action
    args = _parser().parse_args(["repartition", "--partitions", "6"])
    assert (args.command, args.partitions) == ("repartition", 6)


@pytest.mark.integration
async def test_nothing_starts_while_a_repartition_is_marked(redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"t{unique}:")
    await redis_client.hset(keys.meta(), mapping={"partitions": "3", "repartition": "6"})
    with pytest.raises(RepartitionInProgress, match="re-partition to 6 partitions is in progress") as refused:
        await check_partition_count(redis_client, keys, 3)
    assert "`fatigue repartition --partitions 6`" in refused.value.operator_action
    assert await redis_client.hgetall(keys.meta()) == {"partitions": "3", "repartition": "6"}
