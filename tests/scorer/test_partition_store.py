"""One contract, two stores: the partition's state in Redis (one script per commit, fenced by the
epoch) and in memory (the tests' and the property tests' store)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from scorer.partition_store import Fenced, MemoryPartitionStore, PartitionChanges, PartitionStore, RedisPartitionStore
from services.customer_lists import ListEntry
from services.names import RedisKeys
from services.redisio import make_redis_for


@pytest.fixture(params=["memory", "single", "cluster"])
async def store(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[PartitionStore]:
    """The in-memory store, and the Redis one on one Redis and on a Cluster (waiting for a replica
    there, as the scorer does by default)."""
    if request.param == "memory":
        yield MemoryPartitionStore()
        return
    cluster = request.param == "cluster"
    url = request.getfixturevalue("redis_cluster" if cluster else "stack")
    client = make_redis_for(url.url if cluster else url.redis_url)
    try:
        yield RedisPartitionStore(client, RedisKeys(f"t{unique}:", cluster=cluster), wait_replicas=int(cluster))
    finally:
        await client.aclose()


async def test_a_claim_bumps_the_epoch_and_returns_the_stored_offsets(store: PartitionStore) -> None:
    first = await store.claim(3)
    await store.commit(3, first.epoch, PartitionChanges(offsets={"ev": 41, "pr": 7}))
    second = await store.claim(3)
    assert second.epoch == first.epoch + 1 and second.offsets == {"ev": 41, "pr": 7}
    assert (await store.claim(4)).offsets == {}


async def test_a_zombie_commit_is_refused_and_changes_nothing(store: PartitionStore) -> None:
    """Two workers that both believe they own a partition: only the one that claimed it last commits."""
    zombie = await store.claim(0)
    owner = await store.claim(0)
    with pytest.raises(Fenced):
        await store.commit(0, zombie.epoch, PartitionChanges(states={"c1": b"zombie"}, offsets={"ev": 9},
                                                             due={"c1": 5}))
    assert await store.load(0, ["c1"]) == {}
    assert await store.due(0, 10, 10) == []
    await store.commit(0, owner.epoch, PartitionChanges(states={"c1": b"owner"}, offsets={"ev": 9}))
    assert (await store.load(0, ["c1"]))["c1"].state in (b"owner", "owner")
    assert (await store.claim(0)).offsets == {"ev": 9}


async def test_offsets_read_again_are_the_owners_only(store: PartitionStore) -> None:
    """After a commit of unknown outcome the owner reads its offsets again; a zombie is told it lost."""
    zombie = await store.claim(2)
    owner = await store.claim(2)
    await store.commit(2, owner.epoch, PartitionChanges(offsets={"ev": 4}))
    assert await store.offsets(2, owner.epoch) == {"ev": 4}
    with pytest.raises(Fenced):
        await store.offsets(2, zombie.epoch)


async def test_states_entries_and_timers_round_trip_and_erase(store: PartitionStore) -> None:
    claim = await store.claim(1)
    entry = ListEntry("cooling_off", -5, "alice", "A", None)
    await store.commit(1, claim.epoch, PartitionChanges(
        states={"a": b"sa", "b": b"sb"}, views={"a": b"va"}, entries={"a": (None, entry)},
        due={"a": 100, "b": 50}, alerts=Counter({"import": 2})))
    loaded = await store.load(1, ["a", "b", "c"])
    assert set(loaded) == {"a", "b"} and loaded["a"].entry == entry and loaded["b"].entry is None
    assert await store.due(1, 100, 10) == ["b", "a"] and await store.due(1, 99, 10) == ["b"]
    assert await store.due(1, 100, 1) == ["b"]
    await store.commit(1, claim.epoch, PartitionChanges(erased={"a"}, entries={"a": (entry, None)}, due={"a": None}))
    assert set(await store.load(1, ["a", "b"])) == {"b"}
    assert await store.due(1, 1000, 10) == ["b"]


async def test_every_key_of_a_partition_shares_its_hash_tag(redis_client: Redis, unique: str) -> None:
    """What makes one script a partition's atomic commit on a Redis Cluster: a single slot."""
    keys = RedisKeys(f"t{unique}:")
    store = RedisPartitionStore(redis_client, keys)
    claim = await store.claim(7)
    entry = ListEntry("throttled", -1, "bo", "B", "lead")
    await store.commit(7, claim.epoch, PartitionChanges(states={"x": b"s"}, views={"x": b"v"},
                                                        entries={"x": (None, entry)}, due={"x": 1},
                                                        offsets={"ev": 1}, alerts=Counter({"p": 1})))
    written = [key async for key in redis_client.scan_iter(match=f"t{unique}:*")]
    assert len(written) >= 9 and all("{p7}" in key for key in written), written
