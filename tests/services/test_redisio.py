"""Building a Redis client from REDIS_URL (one Redis or a Cluster) and the helpers for work over keys
of several slots; the integration tests run on both a real redis-server and a real Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis, RedisCluster

from services.errors import ConfigError
from services.names import RedisKeys
from services.redisio import check_layout, eval_each, make_redis_for, mget_many, slot_groups
from tests.conftest import RedisTarget
from tests.redis_cluster import RedisClusterProcesses


async def test_a_cluster_url_builds_a_cluster_client_with_its_seeds_and_credentials() -> None:
    client = make_redis_for("rediss+cluster://app:pw@127.0.0.1:7000,127.0.0.1:7001?ssl_cert_reqs=none")
    try:
        assert isinstance(client, RedisCluster)
        assert sorted(client.nodes_manager.startup_nodes) == ["127.0.0.1:7000", "127.0.0.1:7001"]
        kwargs = client.get_connection_kwargs()
        assert (kwargs["username"], kwargs["password"], kwargs["ssl_cert_reqs"]) == ("app", "pw", "none")
    finally:
        await client.aclose()
    single = make_redis_for("redis://127.0.0.1:6399/2")
    assert isinstance(single, Redis) and single.connection_pool.connection_kwargs["db"] == 2
    await single.aclose()


async def test_keys_of_the_other_layout_are_refused_at_once() -> None:
    client = make_redis_for("redis+cluster://127.0.0.1:7000")
    try:
        with pytest.raises(ConfigError, match="key layout does not match"):
            check_layout(client, RedisKeys("x:"))
        check_layout(client, RedisKeys("x:", cluster=True))
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_many_commands_at_once_on_a_fresh_cluster_client(redis_cluster: RedisClusterProcesses,
                                                              unique: str) -> None:
    """redis-py 8.1 broke its connections (AttributeError) when commands of several tasks started on
    a Cluster client before its slot map was read: a burst of requests right after a service starts.
    It happened for about one fresh client in three here, so ten clients are tried."""
    for attempt in range(10):
        client = make_redis_for(redis_cluster.url)
        keys = [f"t{unique}:burst:{attempt}:{i}" for i in range(30)]
        try:
            await asyncio.gather(*(client.set(key, i) for i, key in enumerate(keys)))
            assert await mget_many(client, keys) == [str(i) for i in range(30)]
        finally:
            await client.aclose()


@pytest.mark.integration
async def test_scripts_over_keys_of_several_slots_run_per_slot(redis_target: RedisTarget, unique: str) -> None:
    client = redis_target.client
    keys = [f"t{unique}:k{i}" for i in range(20)]
    groups = slot_groups(client, keys)
    assert sorted(i for group in groups for i in group) == list(range(20))
    assert len(groups) == (1 if redis_target.kind == "single" else len({client.keyslot(k) for k in keys}))
    script = "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1]) end return #KEYS"
    replies = await eval_each(client, script, [([keys[i] for i in group], ["v"]) for group in groups])
    assert sum(replies) == 20
    assert await mget_many(client, keys) == ["v"] * 20
    assert await eval_each(client, script, []) == []
