"""The scorer's stored values on a real Redis: compressed by default, JSON on request, both read by
every reader, and a customer stored in one format carries on in the other (no migration step)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.core.state_codec import decode_state
from scorer.decoding import Record
from scorer.partition_store import RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.state_values import state_of_value
from services.contract import EventEnvelope, EventIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy
from services.snapshots import CustomerReader
from services.stored_values import StoreFormat, ValueEncoder

pytestmark = pytest.mark.integration

EVENTS = "ev"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def touch(offset: int, customer: str = "c1") -> Record:
    body = EventIn.model_validate({
        "event_id": f"e{offset}", "type": "touch", "customer_id": customer, "channel": "sms",
        "occurred_at": (NOW - timedelta(hours=30 - offset)).isoformat(),
    })
    return Record(EVENTS, 0, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)))


async def processor(redis: Redis, prefix: str, store_format: StoreFormat,
                    sink: MemoryDeadLetterSink | None = None) -> Processor:
    proc = Processor(RedisPartitionStore(redis, RedisKeys(prefix)), MemoryActionPublisher(), default_policy,
                     ManualClock(int(NOW.timestamp() * 1000)), ScorerMetrics(CollectorRegistry()), events_topic=EVENTS,
                     profiles_topic="pr", dead_letters=sink or MemoryDeadLetterSink(),
                     encoder=ValueEncoder(store_format))
    await proc.assign([0])
    return proc


async def stored(redis: Redis, prefix: str, customer: str) -> tuple[str, str]:
    keys = RedisKeys(prefix).partition(0)
    return await redis.hget(keys.states(), customer), await redis.hget(keys.views(), customer)


async def test_the_default_writes_compressed_values_every_reader_reads(redis_client: Redis, unique: str) -> None:
    await (await processor(redis_client, unique, "zstd")).process(0, [touch(o) for o in range(3)])
    state, view = await stored(redis_client, unique, "c1")
    assert state.startswith("KLUv") and view.startswith("KLUv")
    assert state_of_value(state).customer_id == "c1"
    reader = CustomerReader(redis_client, RedisKeys(unique), 1)  # one partition: c1 is in partition 0
    payload = await reader.state("c1")
    assert payload is not None and decode_state(payload).events_counted == 3
    assert (await reader.view_with_policy_stamp("c1"))[0]["frequency"]["counted_touches"] == 3  # type: ignore[index]


@pytest.mark.parametrize(("first", "then"), [("json", "zstd"), ("zstd", "json")])
async def test_a_customer_stored_in_one_format_carries_on_in_the_other(
    redis_client: Redis, unique: str, first: StoreFormat, then: StoreFormat
) -> None:
    await (await processor(redis_client, unique, first)).process(0, [touch(o) for o in range(3)])
    raw, _ = await stored(redis_client, unique, "c1")
    assert raw.startswith("{") == (first == "json")
    await (await processor(redis_client, unique, then)).process(0, [touch(o) for o in range(3, 6)])
    state, view = await stored(redis_client, unique, "c1")
    assert state.startswith("{") == (then == "json") and view.startswith("{") == (then == "json")
    if then == "json":
        assert json.loads(state)["events_counted"] == 6  # readable with redis-cli
    assert state_of_value(state).events_counted == 6


async def test_a_corrupt_compressed_state_dead_letters_that_customer_only(redis_client: Redis, unique: str) -> None:
    await redis_client.hset(RedisKeys(unique).partition(0).states(), "bad", "KLUv/QBYAQAAeyJh")  # a frame cut short
    sink = MemoryDeadLetterSink()
    proc = await processor(redis_client, unique, "zstd", sink)
    await proc.process(0, [touch(0, "bad"), touch(1, "good")])
    assert [(d.stage, d.offset) for d in sink.letters] == [("scorer.process", 0)]
    assert "unreadable" in sink.letters[0].error_message and "zstd" in sink.letters[0].error_message
    state, _ = await stored(redis_client, unique, "good")
    assert state_of_value(state).events_counted == 1
