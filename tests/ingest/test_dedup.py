"""The atomic de-duplication claim against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from ingest.dedup import DedupStore
from services.names import RedisKeys
from services.redisio import RedisClient
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every Redis test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def store(redis_client: RedisClient, redis_target: RedisTarget) -> DedupStore:
    return DedupStore(redis_client, redis_target.keys, ttl_s=3600)


async def test_of_concurrent_claims_of_one_id_exactly_one_wins(store: DedupStore) -> None:
    first = await store.claim("crm", ["e1", "e2"], wait_s=0)
    assert (first.claimed, first.duplicates, first.in_flight) == (["e1", "e2"], set(), [])
    await store.confirm("crm", ["e1", "e2"])
    again = await store.claim("crm", ["e1", "e3"], wait_s=0)
    assert (again.claimed, again.duplicates) == (["e3"], {"e1"})


async def test_a_pending_claim_is_waited_for_and_becomes_a_duplicate(store: DedupStore) -> None:
    await store.claim("crm", ["e1"], wait_s=0)
    waiting = asyncio.create_task(store.claim("crm", ["e1"], wait_s=5))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await store.confirm("crm", ["e1"])
    result = await asyncio.wait_for(waiting, 5)
    assert (result.claimed, result.duplicates, result.in_flight) == ([], {"e1"}, [])


async def test_a_released_claim_is_claimed_by_the_waiting_request(store: DedupStore) -> None:
    await store.claim("crm", ["e1"], wait_s=0)
    waiting = asyncio.create_task(store.claim("crm", ["e1"], wait_s=5))
    await asyncio.sleep(0.1)
    await store.release("crm", ["e1"])  # the first publish failed: the event was not stored
    result = await asyncio.wait_for(waiting, 5)
    assert (result.claimed, result.duplicates) == (["e1"], set())


async def test_a_claim_still_pending_after_the_wait_is_reported_in_flight(store: DedupStore) -> None:
    await store.claim("crm", ["e1"], wait_s=0)
    result = await store.claim("crm", ["e1", "e2"], wait_s=0.1)
    assert (result.claimed, result.in_flight) == (["e2"], ["e1"])


async def test_claims_are_per_producer(store: DedupStore) -> None:
    await store.claim("crm", ["e1"], wait_s=0)
    assert (await store.claim("erp", ["e1"], wait_s=0)).claimed == ["e1"]


async def test_redis_down_claims_everything_unchecked() -> None:
    down = DedupStore(Redis.from_url("redis://127.0.0.1:9/0"), RedisKeys("x:"), ttl_s=60, timeout_s=0.5)
    result = await down.claim("crm", ["e1", "e2"], wait_s=1)
    assert (result.claimed, result.checked) == (["e1", "e2"], False)
