"""The shared reader of what the scorer stored for one customer, where its Kafka partition keeps it.

The scorer keeps each customer's state and compact decision view in hashes of the customer's Kafka
partition (services/names.py `PartitionKeys`, services/partitions.py `partition_of`), stored as JSON
or compressed (services/stored_values.py). The API reads the decision view for pre-send decisions
(what the scorer wrote with the state: one round trip) and the state for everything it explains
(`GET /v1/customers/{id}` and the lists compute the snapshot from it at read time, with the core's
own code: ingest/customer_views.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.errors import FatigueError
from services.names import RedisKeys
from services.partitions import partition_of
from services.redisio import RedisClient
from services.stored_values import loads, payload_of


class SnapshotUnreadable(FatigueError):
    """A stored state or view cannot be decoded (corrupt, hand-written, or from a newer build): the
    server's data is at fault, not the request; the message names the customer and why."""

    def __init__(self, customer_id: str, reason: str) -> None:
        super().__init__(f"the stored state of {customer_id!r} is unreadable: {reason}")
        self.customer_id = customer_id


def stored_payload(raw: str | bytes, customer_id: str = "") -> bytes:
    """What a stored value holds (JSON, or a scorer state's MessagePack), decompressed;
    SnapshotUnreadable when it is not a stored value."""
    try:
        return payload_of(raw)
    except ValueError as exc:
        raise SnapshotUnreadable(customer_id, str(exc)) from None


def parse_snapshot(raw: str | bytes, customer_id: str = "") -> dict[str, Any]:
    """A stored document (state, view) as a dict, whichever format it is stored in
    (services/stored_values.py); SnapshotUnreadable when it is not one."""
    try:
        value = loads(raw)
    except ValueError as exc:  # StoredValueUnreadable, or JSON that does not parse
        raise SnapshotUnreadable(customer_id, str(exc)) from None
    if not isinstance(value, dict):
        raise SnapshotUnreadable(customer_id, f"a JSON {type(value).__name__}, not an object")
    return value


class CustomerReader:
    def __init__(self, redis: RedisClient, keys: RedisKeys, partitions: int) -> None:
        self._redis = redis
        self._keys = keys
        self.partitions = partitions

    def partition_of(self, customer_id: str) -> int:
        return partition_of(customer_id, self.partitions)

    async def state(self, customer_id: str) -> bytes | None:
        """The scorer's stored state of the customer (its payload: ingest/customer_views.py reads it
        with the core's state codec), or None."""
        keys = self._keys.partition(self.partition_of(customer_id))
        raw = await self._redis.hget(keys.states(), customer_id)
        return stored_payload(raw, customer_id) if raw else None

    async def states(self, located: list[tuple[str, int]]) -> dict[str, bytes]:
        """The stored states of (customer_id, partition) pairs, one HMGET per partition (in parallel)."""
        by_partition: dict[int, list[str]] = {}
        for customer_id, partition in located:
            by_partition.setdefault(partition, []).append(customer_id)
        answers = await asyncio.gather(*(self._redis.hmget(self._keys.partition(p).states(), ids)
                                          for p, ids in by_partition.items()))
        found = {}
        for ids, raws in zip(by_partition.values(), answers, strict=True):
            for customer_id, raw in zip(ids, raws, strict=True):
                if raw:
                    found[customer_id] = stored_payload(raw, customer_id)
        return found

    async def view_with_policy_stamp(self, customer_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The decision view and the stored policy's version stamp (what `PolicySource.version_stamp`
        reads: None when no policy is stored), in one round trip on a single Redis (a pipeline):
        what a pre-send decision needs."""
        keys = self._keys.partition(self.partition_of(customer_id))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.views(), customer_id)
            pipe.get(self._keys.policy_version())
            raw, stamp = await pipe.execute()
        return (parse_snapshot(raw, customer_id) if raw else None), (None if stamp is None else str(stamp))
