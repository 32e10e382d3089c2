"""The scorer's stored values on a real Redis: compressed by default, JSON on request, both read by
every reader, and a customer stored in one format carries on in the other (no migration step)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.processor import Processor, Record
from scorer.publisher import MemoryActionPublisher
from scorer.store import StateStore
from services import stored_values
from services.contract import EventEnvelope, EventIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy
from services.snapshots import SnapshotReader
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


def processor(redis: Redis, prefix: str, store_format: StoreFormat) -> Processor:
    store = StateStore(redis, RedisKeys(prefix), "g", ValueEncoder(store_format))
    return Processor(store, MemoryActionPublisher(), default_policy, ManualClock(int(NOW.timestamp() * 1000)),
                     ScorerMetrics(CollectorRegistry()), events_topic=EVENTS, profiles_topic="pr",
                     dead_letters=MemoryDeadLetterSink())


async def test_the_default_writes_compressed_values_every_reader_reads(redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(unique)
    await processor(redis_client, unique, "zstd").process([touch(o) for o in range(3)])
    state, snap = await redis_client.mget(keys.state("c1"), keys.snapshot("c1"))
    assert state.startswith("KLUv") and snap.startswith("KLUv")
    assert stored_values.loads(state)["customer_id"] == "c1"
    assert (await SnapshotReader(redis_client, keys).get("c1"))["events_counted"] == 3  # type: ignore[index]
    store, cursor, found = StateStore(redis_client, keys, "g"), None, []
    while cursor != 0:  # SCAN steps over the whole shared database
        cursor, ids = await store.customer_ids(cursor or 0, 1000)
        found += ids
    assert found == ["c1"]


@pytest.mark.parametrize(("first", "then"), [("json", "zstd"), ("zstd", "json")])
async def test_a_customer_stored_in_one_format_carries_on_in_the_other(
    redis_client: Redis, unique: str, first: StoreFormat, then: StoreFormat
) -> None:
    keys = RedisKeys(unique)
    await processor(redis_client, unique, first).process([touch(o) for o in range(3)])
    raw = await redis_client.get(keys.state("c1"))
    assert raw.startswith("{") == (first == "json")
    await processor(redis_client, unique, then).process([touch(o) for o in range(3, 6)])
    state, snap = await redis_client.mget(keys.state("c1"), keys.snapshot("c1"))
    assert state.startswith("{") == (then == "json") and snap.startswith("{") == (then == "json")
    if then == "json":
        assert json.loads(snap)["events_counted"] == 6  # readable with redis-cli
    assert stored_values.loads(snap)["events_counted"] == 6


async def test_a_corrupt_compressed_state_dead_letters_that_customer_only(redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(unique)
    await redis_client.set(keys.state("bad"), "KLUv/QBYAQAAeyJh")  # a frame cut short
    sink = MemoryDeadLetterSink()
    store = StateStore(redis_client, keys, "g")
    proc = Processor(store, MemoryActionPublisher(), default_policy, ManualClock(int(NOW.timestamp() * 1000)),
                     ScorerMetrics(CollectorRegistry()), events_topic=EVENTS, profiles_topic="pr", dead_letters=sink)
    await proc.process([touch(0, "bad"), touch(1, "good")])
    assert [(d.stage, d.offset) for d in sink.letters] == [("scorer.process", 0)]
    assert "unreadable" in sink.letters[0].error_message and "zstd" in sink.letters[0].error_message
    assert stored_values.loads(await redis_client.get(keys.snapshot("good")))["events_counted"] == 1
