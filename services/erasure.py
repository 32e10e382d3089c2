"""Erasure of one customer's scorer data from Redis: the one place that knows every per-customer entry.

Used by `DELETE /v1/customers/{id}` (with a tombstone on the compacted profiles topic) and, through the
tombstone, by the scorer that owns the customer's partition, which erases its own copy (scorer
`Processor._erase`): what an in-flight batch wrote is erased again. Deleting is idempotent. What stays
elsewhere (the Kafka log until its retention, delivery records until they expire) is documented in
docs/api.md#delete-v1customerscustomer_id.

The customer's entries live in the hashes and sorted sets of its Kafka partition, under the
partition's hash tag (services/names.py `PartitionKeys`): one script removes them all atomically —
state, decision view, list entry and list memberships, due timer — on a single Redis and on a Redis
Cluster alike. The list keys depend on the stored entry, read first; the script deletes only if the
entry is still that one (a scorer committing the customer meanwhile makes it read again).
"""

from __future__ import annotations

from services.customer_lists import ListEntry
from services.errors import StoreUnavailable
from services.names import PartitionKeys, RedisKeys
from services.partitions import partition_of
from services.redisio import REDIS_ERRORS, RedisClient

MAX_ATTEMPTS = 5
ERASED = ("state", "snapshot")
"""What `erase_customer` answers for besides `lists`: the scorer's state and the decision view it keeps
with it (the stored part of what the API shows; the snapshot itself is computed at read time)."""

_ERASE = """
local current = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if current ~= ARGV[2] then return {-1} end
local state = redis.call('HDEL', KEYS[1], ARGV[1])
local view = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return {state, view}
"""
"""KEYS: states, views, list entries, due, then the list keys of the entry ARGV[2] (ARGV[1]: customer)."""


async def erase_customer(redis: RedisClient, keys: RedisKeys, partitions: int, customer_id: str) -> dict[str, bool]:
    """Delete the customer's scorer data and take it off the lists reps work from, atomically;
    {name: whether it existed}. StoreUnavailable when Redis fails."""
    pkeys = keys.partition(partition_of(customer_id, partitions))
    script = redis.register_script(_ERASE)
    try:
        for _ in range(MAX_ATTEMPTS):
            raw_entry = await redis.hget(pkeys.customer_list_entries(), customer_id)
            entry = _entry(raw_entry)
            answer = await script(keys=_keys(pkeys, entry), args=[customer_id, raw_entry or ""])
            if int(answer[0]) >= 0:
                state, view = (bool(int(x)) for x in answer)
                return {"state": state, "snapshot": view, "lists": entry is not None}
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"erasing customer data in Redis failed: {exc}") from exc
    raise StoreUnavailable(f"the scorer kept changing customer {customer_id!r} while erasing it; retry")


def _entry(raw: str | bytes | None) -> ListEntry | None:
    if not raw:
        return None
    try:
        return ListEntry.from_json(raw)
    except (ValueError, TypeError):
        return None  # unreadable: the lists of no known entry; the entry itself is deleted


def _keys(pkeys: PartitionKeys, entry: ListEntry | None) -> list[str]:
    found = [pkeys.states(), pkeys.views(), pkeys.customer_list_entries(), pkeys.due()]
    return found + (entry.keys(pkeys) if entry is not None else [])
