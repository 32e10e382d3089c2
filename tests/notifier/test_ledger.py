"""One contract for the delivery ledger, run against the in-memory and the Redis implementation."""

from __future__ import annotations

import pytest

from fatigue.embedded import free_port
from notifier.ledger import DeliveryLedger, MemoryLedger, RedisLedger
from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import make_redis_for
from tests.conftest import RedisTarget

TTL_S = 3600


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def ledger(request: pytest.FixtureRequest, unique: str) -> DeliveryLedger:
    if request.param == "memory":
        return MemoryLedger(ttl_s=TTL_S)
    return RedisLedger(request.getfixturevalue("redis_client"), RedisKeys(f"t{unique}:"), TTL_S)


class TestLedgerContract:
    async def test_unknown_pair_is_not_seen(self, ledger: DeliveryLedger) -> None:
        assert not await ledger.seen("act_1", "sub_a")

    async def test_marked_pair_is_seen(self, ledger: DeliveryLedger) -> None:
        await ledger.mark("act_1", "sub_a")
        assert await ledger.seen("act_1", "sub_a")

    async def test_marks_are_per_action_and_per_subscription(self, ledger: DeliveryLedger) -> None:
        await ledger.mark("act_1", "sub_a")
        assert not await ledger.seen("act_1", "sub_b")
        assert not await ledger.seen("act_2", "sub_a")

    async def test_marking_twice_is_harmless(self, ledger: DeliveryLedger) -> None:
        await ledger.mark("act_1", "sub_a")
        await ledger.mark("act_1", "sub_a")
        assert await ledger.seen("act_1", "sub_a")


async def test_memory_marks_expire() -> None:
    now = [0.0]
    ledger = MemoryLedger(ttl_s=10, clock=lambda: now[0])
    await ledger.mark("act_1", "sub_a")
    now[0] = 9.9
    assert await ledger.seen("act_1", "sub_a")
    now[0] = 10.0
    assert not await ledger.seen("act_1", "sub_a")


@pytest.mark.integration
async def test_redis_mark_uses_the_shared_key_and_expires(redis_target: RedisTarget) -> None:
    redis_client, keys = redis_target.client, redis_target.keys  # one Redis, then a Cluster
    await RedisLedger(redis_client, keys, TTL_S).mark("act_1", "sub_a")
    assert await RedisLedger(redis_client, keys, TTL_S).seen("act_1", "sub_a")
    ttl_s = await redis_client.ttl(keys.delivered("act_1", "sub_a"))
    assert TTL_S - 5 <= ttl_s <= TTL_S


@pytest.mark.parametrize("scheme", ["redis://", "redis+cluster://"])
async def test_redis_down_raises_store_unavailable(scheme: str) -> None:
    """A Cluster client that reaches no node raises RedisClusterException, which is no RedisError:
    it must still be StoreUnavailable (retried), not a crash."""
    dead = make_redis_for(f"{scheme}127.0.0.1:{free_port()}")
    try:
        ledger = RedisLedger(dead, RedisKeys("x:"), TTL_S)
        with pytest.raises(StoreUnavailable):
            await ledger.seen("act_1", "sub_a")
        with pytest.raises(StoreUnavailable):
            await ledger.mark("act_1", "sub_a")
    finally:
        await dead.aclose()
