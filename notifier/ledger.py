"""Which (action, subscription) pairs were already delivered, so a republished action is sent once.

The scorer may publish the same action twice (same `action_id`); the notifier checks the ledger
before sending and marks the pair after a successful delivery. Marks expire after a TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient


class DeliveryLedger(Protocol):
    async def seen(self, action_id: str, subscription_id: str) -> bool:
        """True if the pair was marked and the mark has not expired. Raises StoreUnavailable."""
        ...

    async def mark(self, action_id: str, subscription_id: str) -> None:
        """Record a successful delivery of the pair. Raises StoreUnavailable."""
        ...


class RedisLedger:
    """One expiring key per pair: `keys.delivered(action_id, subscription_id)`."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def seen(self, action_id: str, subscription_id: str) -> bool:
        try:
            return bool(await self._redis.exists(self._keys.delivered(action_id, subscription_id)))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot read the delivery ledger: {exc}") from exc

    async def mark(self, action_id: str, subscription_id: str) -> None:
        try:
            await self._redis.set(self._keys.delivered(action_id, subscription_id), "1", ex=self._ttl_s)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot write the delivery ledger: {exc}") from exc


class MemoryLedger:
    """In-process ledger with the same contract, for tests and offline runs."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._expires: dict[tuple[str, str], float] = {}

    async def seen(self, action_id: str, subscription_id: str) -> bool:
        expires = self._expires.get((action_id, subscription_id))
        return expires is not None and expires > self._clock()

    async def mark(self, action_id: str, subscription_id: str) -> None:
        self._expires[(action_id, subscription_id)] = self._clock() + self._ttl_s
