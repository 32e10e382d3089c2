"""DeliveryStore against a real redis-server: scheduling, claiming with leases, transitions, listing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.deliveries import DeliveryRecord, DeliveryStore
from services.names import RedisKeys
from tests.notifier.helpers import make_action

pytestmark = pytest.mark.integration

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)


class Clock:
    def __init__(self) -> None:
        self.now_s = NOW_S

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_client: Redis, unique: str, clock: Clock) -> DeliveryStore:
    return DeliveryStore(redis_client, RedisKeys(f"t{unique}:"), delivered_ttl_s=60, clock=clock)


def record(delivery_id: str, due_ms: int = NOW_MS, sub_id: str = "sub_a") -> DeliveryRecord:
    return DeliveryRecord.new(delivery_id, make_action(), sub_id, due_ms)


async def test_schedule_is_idempotent_and_keeps_the_first_record(store: DeliveryStore) -> None:
    first = record("msg_1")
    assert await store.schedule([first, record("msg_2")]) == ["msg_1", "msg_2"]
    assert await store.schedule([record("msg_1"), record("msg_3")]) == ["msg_3"]
    assert await store.get("msg_1") == first
    assert await store.count("pending") == 3
    assert await store.schedule([]) == []


async def test_claim_takes_only_due_records_and_the_lease_hides_them(store: DeliveryStore) -> None:
    await store.schedule([record("msg_now"), record("msg_later", due_ms=NOW_MS + 10_000)])
    claimed = await store.claim_due(NOW_MS, lease_ms=5_000, limit=10)
    assert [r.id for r in claimed] == ["msg_now"]
    assert await store.claim_due(NOW_MS + 4_999, lease_ms=5_000, limit=10) == []
    # the claimer died: its lease expires and the delivery is due again
    assert [r.id for r in await store.claim_due(NOW_MS + 5_000, lease_ms=5_000, limit=10)] == ["msg_now"]
    assert [r.id for r in await store.claim_due(NOW_MS + 10_000, lease_ms=5_000, limit=1)] == ["msg_later"]


async def test_reschedule_records_the_attempt_and_moves_the_due_time(store: DeliveryStore) -> None:
    await store.schedule([record("msg_1")])
    await store.claim_due(NOW_MS, lease_ms=60_000, limit=10)
    rec = await store.reschedule("msg_1", next_ms=NOW_MS + 5_000, attempts=1, last_status=500, last_error="HTTP 500")
    assert rec is not None and rec.attempts == 1 and rec.last_status == 500
    assert await store.claim_due(NOW_MS + 4_999, lease_ms=60_000, limit=10) == []
    [again] = await store.claim_due(NOW_MS + 5_000, lease_ms=60_000, limit=10)
    assert (again.attempts, again.last_error, again.status) == (1, "HTTP 500", "pending")


async def test_delivered_leaves_the_queue_and_expires(store: DeliveryStore, redis_client: Redis, unique: str) -> None:
    await store.schedule([record("msg_1")])
    rec = await store.mark_delivered("msg_1", attempts=1, last_status=200)
    assert rec is not None and rec.status == "delivered"
    assert await store.claim_due(NOW_MS + 10**9, lease_ms=1, limit=10) == []
    assert [r.id for r in await store.list("delivered")] == ["msg_1"]
    assert 0 < await redis_client.ttl(RedisKeys(f"t{unique}:").delivery("msg_1")) <= 60
    assert await store.mark_failed("msg_1", attempts=2, last_status=500, last_error="x") is None  # not pending


async def test_failed_goes_to_the_dead_letter_set_and_retry_brings_it_back(
    store: DeliveryStore, clock: Clock
) -> None:
    await store.schedule([record("msg_1"), record("msg_2")])
    await store.mark_failed("msg_1", attempts=7, last_status=503, last_error="HTTP 503")
    clock.now_s += 1
    await store.mark_failed("msg_2", attempts=1, last_status=400, last_error="HTTP 400")
    assert [r.id for r in await store.list("failed")] == ["msg_2", "msg_1"]  # most recent first
    assert [r.id for r in await store.list("failed", limit=1, offset=1)] == ["msg_1"]
    assert await store.count("failed") == 2 and await store.count("pending") == 0

    retried = await store.retry("msg_1")
    assert retried is not None and (retried.status, retried.attempts) == ("pending", 0)
    assert [r.id for r in await store.list("failed")] == ["msg_2"]
    assert [r.id for r in await store.claim_due(store.now_ms(), lease_ms=1000, limit=10)] == ["msg_1"]
    with pytest.raises(ValueError, match="pending"):
        await store.retry("msg_1")
    assert await store.retry("msg_unknown") is None


async def test_list_pending_soonest_first(store: DeliveryStore) -> None:
    await store.schedule([record("msg_b", due_ms=NOW_MS + 2), record("msg_a", due_ms=NOW_MS + 1)])
    assert [r.id for r in await store.list("pending")] == ["msg_a", "msg_b"]
    assert await store.get("msg_none") is None


async def test_rate_slots_count_per_clock_minute(redis_client: Redis, unique: str) -> None:
    store = DeliveryStore(redis_client, RedisKeys(f"t{unique}:"))
    minute_ms = 1_790_000_040_000 - 1_790_000_040_000 % 60_000
    waits = [await store.take_rate_slot("sub_r", 2, minute_ms + 1_000 * i) for i in range(3)]
    assert waits == [0, 0, 60_000 - 2_000]  # the third send waits for the next minute
    assert await store.take_rate_slot("sub_r", 2, minute_ms + 60_000) == 0  # a new minute, a new window
    assert await store.take_rate_slot("sub_other", 2, minute_ms + 5_000) == 0  # per subscription
