"""The shared reader of customer snapshots the scorer writes to Redis (the API reads through it).

The snapshot is a JSON document (schema in docs/api.md, `GET /v1/customers/{id}`); the scorer
rewrites it whenever the customer's state changes and when a window boundary passes.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from services.names import RedisKeys


class SnapshotReader:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.snapshot(customer_id))
        return json.loads(raw) if raw else None
