"""Erasure of one customer's data from Redis: the one place that knows every per-customer key.

Used by `DELETE /v1/customers/{id}` (with a tombstone on the compacted profiles topic) and by the
scorer when that tombstone reaches it, so what an in-flight batch wrote is erased again. Deleting
is idempotent. What stays elsewhere (the Kafka log until its retention, delivery records until
they expire) is documented in docs/api.md#delete-v1customerscustomer_id.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.errors import StoreUnavailable
from services.names import RedisKeys


def customer_keys(keys: RedisKeys, customer_id: str) -> dict[str, str]:
    """What is erased, by name: the scorer's state and the snapshot the API serves."""
    return {"state": keys.state(customer_id), "snapshot": keys.snapshot(customer_id)}


async def erase_customer(redis: Redis, keys: RedisKeys, customer_id: str) -> dict[str, bool]:
    """Delete every per-customer key; {name: whether it existed}. StoreUnavailable when Redis fails."""
    named = customer_keys(keys, customer_id)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            for key in named.values():
                pipe.delete(key)
            deleted = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"erasing customer data in Redis failed: {exc}") from exc
    return {name: bool(count) for name, count in zip(named, deleted, strict=True)}
