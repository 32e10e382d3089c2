"""Records found in a partition their customer is not in (scorer/reroute.py): re-published unchanged to
the customer's partition, never applied where they are; counted once there, also after a crash between
the re-publishing and the commit; the Kafka side on the real broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from scorer.decoding import Record
from scorer.partition_store import PartitionChanges, RedisPartitionStore
from scorer.reroute import REROUTE_STAGE, KafkaRecordRouter, Misrouted
from services.contract import EventEnvelope, EventIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.kafka import make_producer
from services.names import RedisKeys
from services.partitions import partition_of
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, event, service_process, stored_snapshot, wait_until
from tests.scorer.stored import snapshot_of
from tests.scorer_feed import EVENTS, PROFILES, ScorerFeed

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, tzinfo=UTC)
PARTITIONS = 3


def customer_in(partition: int, partitions: int = PARTITIONS, prefix: str = "c") -> str:
    """A customer id murmur2 puts in `partition`."""
    return next(f"{prefix}{n}" for n in range(1000) if partition_of(f"{prefix}{n}", partitions) == partition)


async def state_in(redis: Redis, keys: RedisKeys, partition: int, customer_id: str) -> object:
    return await redis.hget(keys.partition(partition).states(), customer_id)


async def test_a_record_in_the_wrong_partition_is_republished_and_counted_once_where_it_belongs(
        redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"{unique}:")
    feed = ScorerFeed(redis_client, keys, PARTITIONS, NOW)
    customer = customer_in(2)
    wrong = [feed.event(customer, 1, partition=0), feed.profile(customer, partition=0, stage="intent"),
             feed.event(customer_in(0, prefix="x"), 1)]  # one of partition 0's own, in the same batch
    await feed.process(wrong)
    assert feed.router.sent == [Misrouted(wrong[0], 2), Misrouted(wrong[1], 2)]
    assert await state_in(redis_client, keys, 0, customer) is None  # nothing where the API never looks
    stored = await redis_client.hgetall(keys.partition(0).offsets())
    assert stored == {EVENTS: str(wrong[2].offset), PROFILES: str(wrong[1].offset)}  # p's offsets go on
    assert feed.metrics.rerouted.labels(EVENTS)._value.get() == 1
    assert feed.metrics.rerouted.labels(PROFILES)._value.get() == 1

    await feed.process(feed.delivered(feed.router.sent))  # the brokers put the copies in partition 2
    found = await snapshot_of(redis_client, keys.prefix, partition_of(customer, PARTITIONS), customer, NOW)
    assert found is not None and found["events_counted"] == 1 and found["profile"]["stage"] == "intent"
    assert len(feed.router.sent) == 2  # in its own partition nothing is re-published again


async def test_a_tombstone_in_the_wrong_partition_erases_the_customer_where_it_is(
        redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"{unique}:")
    feed = ScorerFeed(redis_client, keys, PARTITIONS, NOW)
    customer = customer_in(1)
    await feed.process([feed.event(customer, 1)])
    await feed.process([feed.tombstone(customer, partition=2)])
    assert [m.partition for m in feed.router.sent] == [1] and feed.router.sent[0].record.value is None
    assert await state_in(redis_client, keys, 1, customer) is not None  # not erased from partition 2's side
    await feed.process(feed.delivered(feed.router.sent))
    assert await state_in(redis_client, keys, 1, customer) is None


class CrashBeforeCommit(RedisPartitionStore):
    """The worker dies after the re-published copies were acknowledged, before its commit landed."""

    crash = True

    async def commit(self, partition: int, epoch: int, changes: PartitionChanges) -> None:
        if self.crash:
            raise KeyboardInterrupt("killed between the re-publishing and the commit")
        await super().commit(partition, epoch, changes)


async def test_a_crash_between_republishing_and_commit_counts_the_record_once(
        redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"{unique}:")
    customer = customer_in(1)
    dying = ScorerFeed(redis_client, keys, PARTITIONS, NOW, store=CrashBeforeCommit(redis_client, keys))
    batch = [dying.event(customer, 1, partition=0), dying.profile(customer, partition=0, tier="A")]
    with pytest.raises(KeyboardInterrupt):
        await dying.process(batch)
    assert len(dying.router.sent) == 2 and await redis_client.hget(keys.partition(0).offsets(), EVENTS) is None

    restarted = ScorerFeed(redis_client, keys, PARTITIONS, NOW)  # reads partition 0 again from its stored offsets
    await restarted.process(batch)
    assert restarted.router.sent == dying.router.sent  # re-published once more
    assert await redis_client.hget(keys.partition(0).offsets(), EVENTS) == "0"
    copies = restarted.delivered(dying.router.sent) + restarted.delivered(restarted.router.sent)
    await restarted.process(copies)
    found = await snapshot_of(redis_client, keys.prefix, partition_of(customer, PARTITIONS), customer, NOW)
    assert found is not None and found["events_counted"] == 1 and found["profile"]["tier"] == "A"
    assert restarted.metrics.events.labels("duplicate")._value.get() == 1  # the event_id absorbed the second copy


# ---- the Kafka side, on the real broker ----


async def read_partition(settings: CommonSettings, topic: str, partition: int, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    found: list = []
    try:
        async def more() -> list | None:
            batch = await consumer.getmany(tp, timeout_ms=500)
            found.extend(batch.get(tp, []))
            return found if len(found) >= expected else None

        await wait_until(more, 20, f"{expected} records in {topic}/{partition}")
    finally:
        await consumer.stop()
    return found


async def test_the_kafka_router_republishes_key_value_headers_and_time_to_the_named_partition(
        common_settings: CommonSettings) -> None:
    router = KafkaRecordRouter(common_settings, MemoryDeadLetterSink())
    record = Record(common_settings.events_topic, 0, 41, b'{"v":1}', b"cust-7", 1_790_000_000_000,
                    (("producer", b"crm"), ("trace", b"\x00\x01")))
    try:
        await router.reroute([Misrouted(record, 2)])
        await router.reroute([Misrouted(record, 2)])  # a retry after an outage: acknowledged, not sent again
    finally:
        await router.close()
    [copy] = await read_partition(common_settings, common_settings.events_topic, 2, 1)
    assert (copy.key, copy.value, copy.timestamp) == (b"cust-7", b'{"v":1}', 1_790_000_000_000)
    assert list(copy.headers) == [("producer", b"crm"), ("trace", b"\x00\x01")]


async def test_a_copy_the_topic_refuses_is_dead_lettered_with_its_source(common_settings: CommonSettings) -> None:
    small = common_settings.model_copy(update={"kafka_max_request_bytes": 2000})
    letters = MemoryDeadLetterSink()
    router = KafkaRecordRouter(small, letters)
    record = Record(small.events_topic, 1, 9, b"x" * 5000, b"cust-8")
    try:
        await router.reroute([Misrouted(record, 0)])
    finally:
        await router.close()
    [letter] = letters.letters
    assert (letter.stage, letter.topic, letter.partition, letter.offset) == (REROUTE_STAGE, small.events_topic, 1, 9)
    assert "too large" in letter.error_message or "2,000" in letter.error_message


async def test_the_scorer_counts_a_record_produced_to_the_wrong_partition_once_where_the_api_finds_it(
        common_settings: CommonSettings, redis_client: Redis, infra_env: dict[str, str], unique: str,
        tmp_path: Path) -> None:
    """A producer that does not partition by murmur2 (librdkafka's default, CRC32): the worker
    re-publishes the record to the customer's partition, counts it there once, and the API's reader
    (partition_of) finds it."""
    customer = customer_in(1, prefix="w")
    body = EventIn.model_validate(event(0, customer, days_ago=1))
    value = encode(EventEnvelope(producer="crc32-producer", received_at=datetime.now(UTC), event=body))
    producer = make_producer(common_settings, "tests")
    await producer.start()
    try:
        await (await producer.send(common_settings.events_topic, value, key=customer.encode(), partition=0,
                                   headers=[("origin", b"librdkafka")]))
    finally:
        await producer.stop()
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    with service_process("scorer", env, tmp_path):
        snap = await wait_until(lambda: stored_snapshot(redis_client, common_settings, customer), 60,
                                "the customer's state where the API looks for it")
        await wait_until(lambda: _stored_offset(redis_client, common_settings, 0), 30, "partition 0's offset")
    assert snap["events_counted"] == 1
    keys = common_settings.keys
    assert await redis_client.hget(keys.partition(0).states(), customer) is None
    [copy] = await read_partition(common_settings, common_settings.events_topic, 1, 1)
    assert (copy.key, copy.value, list(copy.headers)) == (customer.encode(), value, [("origin", b"librdkafka")])
    assert json.loads(copy.value)["producer"] == "crc32-producer"


async def _stored_offset(redis: Redis, settings: CommonSettings, partition: int) -> object:
    return await redis.hget(settings.keys.partition(partition).offsets(), settings.events_topic)


def test_rerouted_records_are_counted_always_and_logged_once_a_minute_per_partition(
        caplog: pytest.LogCaptureFixture) -> None:
    from scorer.reroute import MemoryRecordRouter, Rerouting

    counted: list[tuple[str, int]] = []
    rerouting = Rerouting(PARTITIONS, MemoryRecordRouter(), lambda topic, n: counted.append((topic, n)))
    one = [Misrouted(Record(EVENTS, 0, 1, b"{}", b"k"), 2)]
    with caplog.at_level("WARNING", logger="scorer.reroute"):
        for partition, now_ms in ((0, 0), (0, 30_000), (1, 30_000), (0, 59_999), (0, 60_000)):
            rerouting.done(partition, one, now_ms)
    assert counted == [(EVENTS, 1)] * 5
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0] for line in lines] == ["partition 0", "partition 1", "partition 0"]
    assert lines[2].startswith("partition 0: 3 records of customers of other partitions re-published")
