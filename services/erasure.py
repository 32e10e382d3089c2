"""Erasure of one customer's data from Redis: the one place that knows every per-customer key.

Used by `DELETE /v1/customers/{id}` (with a tombstone on the compacted profiles topic) and by the
scorer when that tombstone reaches it, so what an in-flight batch wrote is erased again. Deleting
is idempotent. What stays elsewhere (the Kafka log until its retention, delivery records until
they expire) is documented in docs/api.md#delete-v1customerscustomer_id.
"""

from __future__ import annotations

from redis.exceptions import RedisError, WatchError

from services.customer_lists import ListEntry, queue_index_change
from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import RedisClient


def customer_keys(keys: RedisKeys, customer_id: str) -> dict[str, str]:
    """What is erased, by name: the scorer's state and the snapshot the API serves (the lists are
    erased by index, `queue_index_change`)."""
    return {"state": keys.state(customer_id), "snapshot": keys.snapshot(customer_id)}


MAX_ATTEMPTS = 5


async def erase_customer(redis: RedisClient, keys: RedisKeys, customer_id: str) -> dict[str, bool]:
    """Delete every per-customer key and take the customer off the lists reps work from, atomically
    (WATCHing its state: a scorer committing the same customer meanwhile makes it try again);
    {name: whether it existed}. StoreUnavailable when Redis fails."""
    named = customer_keys(keys, customer_id)
    try:
        for _ in range(MAX_ATTEMPTS):
            try:
                return await _erase_once(redis, keys, customer_id, named)
            except WatchError:
                continue
    except RedisError as exc:
        raise StoreUnavailable(f"erasing customer data in Redis failed: {exc}") from exc
    raise StoreUnavailable(f"the scorer kept changing customer {customer_id!r} while erasing it; retry")


async def _erase_once(redis: RedisClient, keys: RedisKeys, customer_id: str, named: dict[str, str]) -> dict[str, bool]:
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(keys.state(customer_id))
        raw_entry = await pipe.hget(keys.customer_list_entries(), customer_id)
        entry = ListEntry.from_json(raw_entry) if raw_entry else None
        pipe.multi()
        for key in named.values():
            pipe.delete(key)
        queue_index_change(pipe, keys, customer_id, entry, None)
        deleted = await pipe.execute()
    erased = {name: bool(count) for name, count in zip(named, deleted, strict=False)}
    erased["lists"] = entry is not None
    return erased
