"""De-duplication of event ids per producer, claimed atomically before publishing.

Each fresh event id is claimed with `SET key pending NX EX ttl` before the event is published, so
of concurrent requests carrying the same id exactly one publishes it and counts it as accepted; the
claim becomes `done` once Kafka acknowledged, and is released (deleted) when the publish failed,
so a retry can claim it again. A request that finds an id `pending` (another request is publishing
it right now) waits until that one ends: `done` makes it a duplicate, a released claim is claimed
again. So `accepted` counts are true under concurrency and a duplicate is never reported for an
event that was not stored.

Redis is an optimisation here, not a dependency: when it does not answer, events go through
unclaimed and the scorer's own de-duplication by event_id keeps the counts right.

A batch's claims and its confirmations are one command each (a Lua script over all its keys), not
one command per event in a pipeline: redis-py spends most of a pipeline's time packing and parsing
commands one by one, which was a quarter of a 100-event POST's CPU (docs/performance.md).

On a Redis Cluster a script may only touch keys of one slot, and an id's key is a slot of its own:
the scripts run once per slot, pipelined (one round trip per node). No atomicity across ids is lost:
each id's claim was already independent of the others'.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.names import RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient, eval_each, slot_groups

log = logging.getLogger(__name__)

DEDUP_TIMEOUT_S = 2.0
"""How long a de-duplication read or write may take before it is skipped."""
PENDING_TTL_S = 60
"""A claim whose request died before confirming or releasing it lapses after this long."""
PENDING = "pending"
DONE = "done"
WAIT_STEP_S = 0.02

# KEYS: the dedup keys of one batch. ARGV: pending value, pending TTL (s). Claims every key not
# claimed yet (SET NX EX) and returns each key's previous value (nil: claimed now).
_CLAIM_SCRIPT = """
local previous = {}
for i, key in ipairs(KEYS) do
  previous[i] = redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2], 'GET')
end
return previous
"""

# KEYS: the dedup keys of one batch. ARGV: done value, TTL (s). Marks every key done.
_CONFIRM_SCRIPT = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
return #KEYS
"""


@dataclass
class Claim:
    """What one request may publish: `claimed` ids are its own; `duplicates` were stored before."""

    claimed: list[str] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)
    in_flight: list[str] = field(default_factory=list)
    """Ids another request is still publishing after the wait: the caller answers 503 for them."""
    checked: bool = True
    """False when Redis did not answer: nothing was claimed, `claimed` holds every id unchecked."""


class DedupStore:
    def __init__(self, redis: RedisClient, keys: RedisKeys, ttl_s: int, timeout_s: float = DEDUP_TIMEOUT_S,
                 pending_ttl_s: int = PENDING_TTL_S) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._pending_ttl_s = pending_ttl_s

    async def claim(self, producer: str, event_ids: Sequence[str], *, wait_s: float) -> Claim:
        """Claim the ids not yet stored; wait up to `wait_s` for ids another request is publishing."""
        if not event_ids:
            return Claim()
        try:
            return await self._claim(producer, list(event_ids), wait_s)
        except (*REDIS_ERRORS, OSError, TimeoutError) as exc:
            log.warning("de-duplication skipped, Redis did not answer: %r", exc)
            return Claim(claimed=list(event_ids), checked=False)

    async def _claim(self, producer: str, event_ids: list[str], wait_s: float) -> Claim:
        claim = Claim()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        todo = event_ids
        while todo:
            won, duplicates, pending = await self._try_claim(producer, todo)
            claim.claimed += won
            claim.duplicates |= duplicates
            if not pending or loop.time() >= deadline:
                claim.in_flight = pending
                break
            await asyncio.sleep(WAIT_STEP_S)
            todo = pending
        return claim

    async def _try_claim(self, producer: str, event_ids: list[str]) -> tuple[list[str], set[str], list[str]]:
        keys = [self._keys.dedup(producer, event_id) for event_id in event_ids]
        async with asyncio.timeout(self._timeout_s):
            previous = await self._per_slot(_CLAIM_SCRIPT, keys, [PENDING, self._pending_ttl_s])
        states = [old.decode() if isinstance(old, bytes) else old for old in previous]
        won = [eid for eid, old in zip(event_ids, states, strict=True) if old is None]
        duplicates = {eid for eid, old in zip(event_ids, states, strict=True) if old is not None and old != PENDING}
        pending = [eid for eid, old in zip(event_ids, states, strict=True) if old == PENDING]
        return won, duplicates, pending

    async def confirm(self, producer: str, event_ids: Sequence[str]) -> None:
        """The claimed ids are stored in Kafka: later requests see them as duplicates for `ttl_s`."""
        await self._set_all(producer, event_ids, release=False)

    async def release(self, producer: str, event_ids: Sequence[str]) -> None:
        """The publish failed: drop the claims so a retry of the same events is not a duplicate."""
        await self._set_all(producer, event_ids, release=True)

    async def _set_all(self, producer: str, event_ids: Sequence[str], *, release: bool) -> None:
        if not event_ids:
            return
        keys = [self._keys.dedup(producer, event_id) for event_id in event_ids]
        try:
            async with asyncio.timeout(self._timeout_s):
                if release:
                    await self._redis.delete(*keys)  # a Cluster client deletes per slot
                else:
                    await self._per_slot(_CONFIRM_SCRIPT, keys, [DONE, self._ttl_s])
        except (*REDIS_ERRORS, OSError, TimeoutError) as exc:
            what = "release" if release else "confirm"
            log.warning("could not %s %d de-duplication claims: %r", what, len(event_ids), exc)

    async def _per_slot(self, script: str, keys: list[str], args: list[str | int]) -> list[Any]:
        """`script` over `keys`, once per hash slot (once on one Redis); one result per key, in order.
        Both scripts return a list with one value per key, or its length."""
        groups = slot_groups(self._redis, keys)
        replies = await eval_each(self._redis, script, [([keys[i] for i in group], args) for group in groups])
        results: list[Any] = [None] * len(keys)
        for group, reply in zip(groups, replies, strict=True):
            for position, index in enumerate(group):
                results[index] = reply[position] if isinstance(reply, list) else reply
        return results
