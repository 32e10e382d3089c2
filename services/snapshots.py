"""The shared reader of customer snapshots the scorer writes to Redis (the API reads through it).

The snapshot is a JSON document (schema in docs/api.md, `GET /v1/customers/{id}`), stored as JSON or
compressed (services/stored_values.py); the scorer
rewrites it whenever the customer's state changes and when a window boundary passes.
"""

from __future__ import annotations

from typing import Any

from services.errors import FatigueError
from services.names import RedisKeys
from services.redisio import RedisClient
from services.stored_values import loads


class SnapshotUnreadable(FatigueError):
    """A stored snapshot cannot be decoded (corrupt, hand-written, or from a newer build): the server's
    data is at fault, not the request; the message names the customer and why."""

    def __init__(self, customer_id: str, reason: str) -> None:
        super().__init__(f"the stored state of {customer_id!r} is unreadable: {reason}")
        self.customer_id = customer_id


def parse_snapshot(raw: str | bytes, customer_id: str = "") -> dict[str, Any]:
    """A stored snapshot as a dict, whichever format it is stored in (services/stored_values.py);
    SnapshotUnreadable when it is not one."""
    try:
        value = loads(raw)
    except ValueError as exc:  # StoredValueUnreadable, or JSON that does not parse
        raise SnapshotUnreadable(customer_id, str(exc)) from None
    if not isinstance(value, dict):
        raise SnapshotUnreadable(customer_id, f"a JSON {type(value).__name__}, not an object")
    return value


class SnapshotReader:
    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.snapshot(customer_id))
        return parse_snapshot(raw, customer_id) if raw else None

    async def get_with_policy_stamp(self, customer_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The snapshot and the stored policy's version stamp (what `PolicySource.version_stamp` reads:
        None when no policy is stored), in one round trip (MGET): what a pre-send decision needs."""
        stamp, raw = await self._redis.mget(self._keys.policy_version(), self._keys.snapshot(customer_id))
        return (parse_snapshot(raw, customer_id) if raw else None), (None if stamp is None else str(stamp))
