"""`fatigue customers reindex`: put every stored customer of a partition on the list its state says.

The partition is claimed first (its epoch bumped, scorer/partition_store.py): a scorer owning it is
fenced at its next commit, gives the partition up, rejoins its group and takes it back with what this
wrote — instead of overwriting it from the states and list entries it keeps in memory.
"""

from __future__ import annotations

from scorer.lists import list_entry_of
from scorer.partition_store import PartitionChanges, RedisPartitionStore
from scorer.state_values import state_of_value
from services.names import RedisKeys
from services.redisio import RedisClient


async def reindex_partition(redis: RedisClient, keys: RedisKeys, partition: int, batch: int = 500) -> tuple[int, int]:
    """(states read, list entries written or moved) of one partition. A state that does not decode is
    left alone (the scorer dead-letters that customer's records)."""
    store = RedisPartitionStore(redis, keys)
    claim = await store.claim(partition)
    pkeys = keys.partition(partition)
    read = moved = 0
    cursor = 0
    while True:
        cursor, answer = await redis.hscan(pkeys.states(), cursor, count=batch)
        found = {str(k): v for k, v in answer.items()} if isinstance(answer, dict) else {}
        ids = list(found)
        stored = await store.load(partition, ids)
        changes = PartitionChanges()
        for customer_id, raw in found.items():
            try:
                state = state_of_value(raw)
            except Exception:  # noqa: BLE001, S112 - any shape a corrupt value may have: left alone
                continue
            read += 1
            old = stored[customer_id].entry if customer_id in stored else None
            new = list_entry_of(state)
            if old != new:
                changes.entries[customer_id] = (old, new)
        moved += len(changes.entries)
        if changes:
            await store.commit(partition, claim.epoch, changes)
        if cursor == 0:
            return read, moved
