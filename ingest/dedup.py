"""Best-effort de-duplication of event ids the API already had acknowledged (per producer).

Redis is an optimisation here, not a dependency: when it does not answer, events go through
un-checked and the scorer's own de-duplication by event_id keeps counts right.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.names import RedisKeys

log = logging.getLogger(__name__)

DEDUP_TIMEOUT_S = 2.0
"""How long a de-duplication read or write may take before it is skipped."""


class DedupStore:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int, timeout_s: float = DEDUP_TIMEOUT_S) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s

    async def seen(self, producer: str, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` already acknowledged; empty when Redis does not answer."""
        if not event_ids:
            return set()
        keys = [self._keys.dedup(producer, event_id) for event_id in event_ids]
        try:
            async with asyncio.timeout(self._timeout_s):
                values = await self._redis.mget(keys)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("de-duplication skipped, Redis did not answer: %r", exc)
            return set()
        return {event_id for event_id, value in zip(event_ids, values, strict=True) if value is not None}

    async def mark(self, producer: str, event_ids: Sequence[str]) -> None:
        """Remember `event_ids` as acknowledged for `dedup_ttl_s`; a Redis failure is logged only."""
        if not event_ids:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for event_id in event_ids:
                        pipe.set(self._keys.dedup(producer, event_id), "1", ex=self._ttl_s)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not record %d event ids for de-duplication: %r", len(event_ids), exc)
