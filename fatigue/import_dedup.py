"""De-duplication for `fatigue import`: a promise, not an optimisation (docs/import.md).

The API's DedupStore lets a batch through unclaimed when Redis does not answer (the scorer's own
de-duplication keeps its counts right). An import is re-run and resumed by design, so there Redis
must answer: `dedup_store` checks it before anything is stored (DedupUnavailable, exit 2), and
`StrictDedup` refuses to store a batch whose ids could not be claimed — unless `--dedup-optional`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import IO

from redis.exceptions import RedisError

from ingest.dedup import Claim, DedupStore
from services.errors import StoreUnavailable
from services.redaction import mask_url, redact
from services.redisio import RedisClient
from services.settings import ImportSettings

REDIS_PING_S = 5.0
CLAIM_ATTEMPTS = 30
CLAIM_RETRY_S = 1.0


class DedupUnavailable(StoreUnavailable):
    """Redis, where the import claims event ids (de-duplication), does not answer."""

    retriable = True
    operator_action = ("Start Redis (REDIS_URL) and run the same command again (with --resume if it had stored "
                       "batches), or pass --dedup-optional to store without de-duplication (a re-run may then "
                       "store events twice).")


class StrictDedup(DedupStore):
    """De-duplication that is never skipped: a claim Redis did not answer is tried again
    (`attempts` times, `retry_s` apart), then DedupUnavailable — nothing of the batch is stored."""

    def __init__(self, redis: RedisClient, settings: ImportSettings, *, attempts: int = CLAIM_ATTEMPTS,
                 retry_s: float = CLAIM_RETRY_S) -> None:
        super().__init__(redis, settings.keys, settings.dedup_ttl_s)
        self._where = mask_url(settings.redis_url)
        self._attempts = attempts
        self._retry_s = retry_s

    async def claim(self, producer: str, event_ids: Sequence[str], *, wait_s: float) -> Claim:
        if not event_ids:
            return Claim()
        reason = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._retry_s)
            try:
                return await self._claim(producer, list(event_ids), wait_s)
            except (RedisError, OSError, TimeoutError) as exc:
                reason = redact(str(exc)) or type(exc).__name__
        raise DedupUnavailable(f"Redis at {self._where} did not answer {self._attempts} claims ({reason}): the "
                               "batch was not stored")


async def dedup_store(redis: RedisClient, settings: ImportSettings, err: IO[str], *, optional: bool) -> DedupStore:
    """StrictDedup once Redis answered a PING; DedupUnavailable when it does not, unless
    `optional`: then the API's skipping DedupStore, after a warning on `err`."""
    try:
        async with asyncio.timeout(REDIS_PING_S):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        where = mask_url(settings.redis_url)
        reason = redact(str(exc)) or type(exc).__name__
        if not optional:
            raise DedupUnavailable(f"Redis at {where} is not usable ({reason}): the import de-duplicates event ids "
                                   "there and does not start without it") from None
        err.write(f"fatigue import: Redis at {where} is not usable ({reason}): storing events WITHOUT "
                  "de-duplication (--dedup-optional)\n")
        return DedupStore(redis, settings.keys, settings.dedup_ttl_s)
    if optional:
        return DedupStore(redis, settings.keys, settings.dedup_ttl_s)
    return StrictDedup(redis, settings)
