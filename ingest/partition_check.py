"""What `/readyz` says of the partition count: an API on another count than the one the state is
written for reads customers in the wrong partitions, so it is not ready.

The API checks the count when it starts (services/partitions.py); this check catches what happens
after: `fatigue repartition` run while an API kept running, or an API restarted with the old
FATIGUE_PARTITIONS. One HMGET of the meta hash, its answer kept TTL_S seconds (probes come often).
When Redis does not answer, the Redis check of `/readyz` says so; this one keeps its last answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.partitions import recorded
from services.redisio import RedisClient

TTL_S = 5.0
OK = "ok"


class PartitionCountCheck:
    def __init__(self, redis: RedisClient, keys: RedisKeys, partitions: int, *, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._keys = keys
        self._partitions = partitions
        self._ttl_s = ttl_s
        self._clock = clock
        self._answer: tuple[float, str] | None = None

    async def check(self, timeout_s: float) -> str:
        """`ok`, or `error: …` naming FATIGUE_PARTITIONS and the recorded count (or the re-partition in
        progress). An answer from Redis is kept TTL_S seconds; when Redis does not answer within
        `timeout_s`, the last answer (`ok` if none)."""
        now = self._clock()
        if self._answer is not None and now - self._answer[0] < self._ttl_s:
            return self._answer[1]
        try:
            async with asyncio.timeout(timeout_s):
                meta = await recorded(self._redis, self._keys)
        except (StoreUnavailable, TimeoutError):
            return OK if self._answer is None else self._answer[1]
        answer = self._judge(meta.partitions, meta.repartition)
        self._answer = (now, answer)
        return answer

    def _judge(self, count: str | None, moving: str | None) -> str:
        if moving is not None:
            return (f"error: a re-partition to {moving} partitions is in progress (`fatigue repartition "
                    f"--partitions {moving}`); then restart with FATIGUE_PARTITIONS={moving}")
        if count is None or count == str(self._partitions):
            return OK
        return (f"error: FATIGUE_PARTITIONS={self._partitions}, but the state in Redis is written for {count} "
                f"partitions: restart the API with FATIGUE_PARTITIONS={count}")
