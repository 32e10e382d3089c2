"""The worker's cache of decoded states (scorer/state_cache.py): taken by a batch, put back only by a
successful commit, dropped with its partition — so a cached scorer writes what an uncached one writes,
through profiles, erasures, timers and core failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.core import engine
from scorer.core.state import CustomerState
from scorer.decoding import Record
from scorer.partition_store import RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.state_cache import CachedCustomer, StateCache
from scorer.state_values import state_of_value
from services import stored_values
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.durations import DAY_MS
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy

EVENTS, PROFILES = "ev", "pr"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


# ---- the cache itself (no Redis) ----


def cached(name: str, partition: int = 0) -> CachedCustomer:
    return CachedCustomer(partition, CustomerState(name), None)


def test_an_entry_is_handed_out_once() -> None:
    cache = StateCache(10)
    entry = cached("c1")
    cache.put("c1", entry)
    assert cache.take("c1") is entry
    assert cache.take("c1") is None  # taken: a failed batch cannot leave a mutated copy behind


def test_the_least_recently_committed_entry_is_evicted_first() -> None:
    cache = StateCache(2)
    for name in ("a", "b", "c"):
        cache.put(name, cached(name))
    assert len(cache) == 2 and cache.take("a") is None and cache.take("c") is not None
    cache.put("b", cached("b"))  # recommitted: most recent again
    cache.put("d", cached("d"))
    assert cache.take("b") is not None


def test_a_partition_given_up_takes_its_customers_with_it() -> None:
    cache = StateCache(10)
    for name, partition in (("a", 0), ("b", 1), ("c", 0)):
        cache.put(name, cached(name, partition))
    cache.forget_partition(0)
    assert len(cache) == 1 and cache.take("b") is not None


def test_capacity_zero_keeps_nothing_and_a_negative_one_is_refused() -> None:
    cache = StateCache(0)
    cache.put("c1", cached("c1"))
    assert len(cache) == 0 and cache.take("c1") is None
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        StateCache(-1)


# ---- a cached scorer on a real Redis writes what an uncached one writes ----


def touch(offset: int, customer: str, *, partition: int = 0, hours_ago: float = 50.0, event_id: str | None = None,
          type_: str = "touch", kind: str | None = None) -> Record:
    body = EventIn.model_validate({
        "event_id": event_id or f"e{partition}-{offset}", "type": type_, "customer_id": customer, "channel": "email",
        "occurred_at": (NOW - timedelta(hours=hours_ago)).isoformat(), **({"kind": kind} if kind else {}),
    })
    return Record(EVENTS, partition, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)),
                  key=customer.encode())


def profile(offset: int, customer: str, stage: str) -> Record:
    envelope = ProfileEnvelope(customer_id=customer, updated_at=NOW, profile=ProfileIn(stage=stage, owner_rep_id="r1"))
    return Record(PROFILES, 0, offset, encode(envelope), key=customer.encode())


def tombstone(offset: int, customer: str) -> Record:
    return Record(PROFILES, 0, offset, None, key=customer.encode())


class Worker:
    def __init__(self, redis: Redis, prefix: str, cache_size: int, clock: ManualClock | None = None) -> None:
        self.redis, self.keys = redis, RedisKeys(prefix)
        self.metrics = ScorerMetrics(CollectorRegistry())
        self.clock = clock or ManualClock(int(NOW.timestamp() * 1000))
        self.actions = MemoryActionPublisher()
        self.letters = MemoryDeadLetterSink()
        self.processor = Processor(
            RedisPartitionStore(redis, self.keys), self.actions, default_policy, self.clock, self.metrics,
            events_topic=EVENTS, profiles_topic=PROFILES, dead_letters=self.letters, cache=StateCache(cache_size))

    async def process(self, records: list[Record]) -> None:
        if not self.processor.owned():
            await self.processor.assign([0])
        await self.processor.process(0, records)

    def hits(self) -> tuple[float, float]:
        counter = self.metrics.state_cache
        return counter.labels("hit")._value.get(), counter.labels("miss")._value.get()

    async def stored(self, customers: list[str]) -> dict[str, tuple[object, object]]:
        keys = self.keys.partition(0)
        out = {}
        for c in customers:
            state, view = await self.redis.hget(keys.states(), c), await self.redis.hget(keys.views(), c)
            out[c] = (state and state_of_value(state).to_json(), view and stored_values.loads(view))
        return out

    async def counted(self, customer: str) -> int:
        raw = await self.redis.hget(self.keys.partition(0).states(), customer)
        return state_of_value(raw).events_counted if raw else 0


@pytest.mark.integration
async def test_batches_timers_profiles_and_erasures_write_the_same_with_and_without_the_cache(
    redis_client: Redis, unique: str
) -> None:
    cached, plain = Worker(redis_client, f"{unique}a:", 100), Worker(redis_client, f"{unique}b:", 0)
    customers = [f"c{i}" for i in range(6)]
    batches = [
        [profile(0, "c0", "prospect")] + [touch(o, customers[o % 6], hours_ago=60 - o) for o in range(12)],
        [touch(o, customers[o % 4], hours_ago=40 - o) for o in range(12, 24)],
        [tombstone(1, "c3"), touch(24, "c3", hours_ago=10), touch(25, "c1", type_="response", kind="reply",
                                                                  hours_ago=9)],
        [touch(o, customers[o % 6], hours_ago=5 - (o - 26) * 0.1) for o in range(26, 40)],
    ]
    for batch in batches:
        for worker in (cached, plain):
            await worker.process(batch)
        assert await cached.stored(customers) == await plain.stored(customers)
    for worker in (cached, plain):
        worker.clock.advance(8 * DAY_MS)  # timers: windows expire, the prospect's cadence passes
        await worker.processor.fire_due(0)
    assert await cached.stored(customers) == await plain.stored(customers)
    assert cached.actions.published == plain.actions.published
    hits, misses = cached.hits()
    assert hits >= 10, (hits, misses)  # the batches after the first found their customers cached


@pytest.mark.integration
async def test_a_new_owner_reads_from_redis_what_the_last_one_committed(redis_client: Redis, unique: str) -> None:
    """The partition moved to another worker and back (each claim bumps its epoch): the states the
    worker had cached are dropped with the partition, and read again from Redis."""
    worker, other = Worker(redis_client, unique, 100), Worker(redis_client, unique, 100)
    await worker.process([touch(0, "c1"), touch(1, "c1", hours_ago=49)])
    await other.process([touch(2, "c1", hours_ago=48)])  # claims partition 0: the first worker is fenced
    await worker.processor.assign([0])  # and takes it back
    await worker.process([touch(3, "c1", hours_ago=47)])
    assert await worker.counted("c1") == 4
    assert worker.hits() == (0.0, 2.0)  # nothing stored at first; then the other's value
    await worker.process([touch(4, "c1", hours_ago=46)])
    assert worker.hits() == (1.0, 2.0) and await worker.counted("c1") == 5


@pytest.mark.integration
async def test_a_batch_the_core_fails_on_leaves_no_half_applied_state_in_the_cache(
    redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core mutates the state, then fails: the bisected retry must start from the committed state."""
    cached, plain = Worker(redis_client, f"{unique}a:", 100), Worker(redis_client, f"{unique}b:", 0)
    first = [touch(o, f"c{o % 3}", hours_ago=30 - o) for o in range(6)]
    for worker in (cached, plain):
        await worker.process(first)
    real = engine.apply_event

    def mutate_then_fail(state, event, now_ms, policy):  # type: ignore[no-untyped-def]
        outcome = real(state, event, now_ms, policy)
        if event.event_id == "poison":
            raise OverflowError("the core failed after changing the state")
        return outcome

    monkeypatch.setattr(engine, "apply_event", mutate_then_fail)
    second = [touch(o, f"c{o % 3}", hours_ago=20 - o) for o in range(6, 15)]
    second[4] = touch(10, "c1", event_id="poison", hours_ago=12)
    for worker in (cached, plain):
        await worker.process(second)
        assert [letter.offset for letter in worker.letters.letters] == [10]
    assert [await cached.counted(f"c{i}") for i in range(3)] == [5, 4, 5]
    assert await cached.stored(["c0", "c1", "c2"]) == await plain.stored(["c0", "c1", "c2"])
