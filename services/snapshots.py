"""The shared reader of customer snapshots the scorer writes to Redis (the API reads through it).

The snapshot is a JSON document (schema in docs/api.md, `GET /v1/customers/{id}`); the scorer
rewrites it whenever the customer's state changes and when a window boundary passes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from redis.asyncio import Redis

from services.names import RedisKeys


def parse_snapshot(raw: str | bytes) -> dict[str, Any]:
    """A stored snapshot as a dict: orjson, or the stdlib for what orjson refuses and Python's json
    writes (NaN or Infinity in a hand-written or old value)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = json.loads(raw)
    return value  # type: ignore[no-any-return]


class SnapshotReader:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.snapshot(customer_id))
        return parse_snapshot(raw) if raw else None

    async def get_with_policy_stamp(self, customer_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The snapshot and the stored policy's version stamp (what `PolicySource.version_stamp` reads:
        None when no policy is stored), in one round trip (MGET): what a pre-send decision needs."""
        stamp, raw = await self._redis.mget(self._keys.policy_version(), self._keys.snapshot(customer_id))
        return (parse_snapshot(raw) if raw else None), (None if stamp is None else str(stamp))
