"""Durable webhook deliveries in Redis: the notifier schedules and updates them, the API reads them.

A delivery is one action for one subscription; its id is the `webhook-id` (stable per pair), so
scheduling the same pair twice keeps the first record. Pending deliveries sit in a sorted set by
next attempt time; a worker *claims* due ones by pushing their time `lease_ms` into the future,
so a worker that dies mid-attempt loses its claim and the delivery becomes due again
(at-least-once: receivers de-duplicate by webhook-id). Failed deliveries (permanent error or out
of attempts) are kept in a dead-letter set until retried; delivered ones expire after a TTL.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.actions import Action
from services.errors import StoreUnavailable
from services.names import RedisKeys

Status = Literal["pending", "delivered", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")

# KEYS[1] = due set, KEYS[2] = record key; ARGV = record JSON, due ms, id. 1 if scheduled.
_SCHEDULE = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] = due set; ARGV = now ms, lease ms, limit. The ids claimed.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], until_ms, id)
end
return ids
"""


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    action: Action
    subscription_id: str
    status: Status
    attempts: int
    next_attempt_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int
    last_status: int | None = None
    last_error: str | None = None

    @classmethod
    def new(cls, delivery_id: str, action: Action, subscription_id: str, now_ms: int) -> DeliveryRecord:
        return cls(delivery_id, action, subscription_id, "pending", 0, now_ms, now_ms, now_ms)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeliveryRecord:
        return cls(**json.loads(raw))


class DeliveryStore:
    """Deliveries on Redis under `keys`. Every method raises StoreUnavailable when Redis fails.

    `delivered_ttl_s`: how long a delivered record stays readable. `clock`: seconds since the epoch.
    """

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, delivered_ttl_s: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = delivered_ttl_s
        self._clock = clock
        self._schedule = redis.register_script(_SCHEDULE)
        self._claim = redis.register_script(_CLAIM)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def schedule(self, records: Iterable[DeliveryRecord]) -> builtins.list[str]:
        """Store pending records due at their `next_attempt_at_ms`; ids that exist are left alone.

        Returns the ids newly scheduled. Once this returns, the deliveries survive a restart.
        """
        records = list(records)
        if not records:
            return []
        due = self._keys.deliveries_due()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for rec in records:
                    await self._schedule(keys=[due, self._keys.delivery(rec.id)],
                                         args=[rec.to_json(), rec.next_attempt_at_ms or 0, rec.id], client=pipe)
                added = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"cannot schedule webhook deliveries: {exc}") from exc
        return [rec.id for rec, ok in zip(records, added, strict=True) if ok]

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> builtins.list[DeliveryRecord]:
        """Pending records due at `now_ms` (at most `limit`), each claimed until `now_ms + lease_ms`."""
        if limit <= 0:
            return []
        try:
            ids = await self._claim(keys=[self._keys.deliveries_due()], args=[now_ms, lease_ms, limit])
            return await self._records(ids, drop_from=self._keys.deliveries_due())
        except RedisError as exc:
            raise StoreUnavailable(f"cannot claim due webhook deliveries: {exc}") from exc

    async def take_rate_slot(self, subscription_id: str, per_minute: int, now_ms: int) -> int:
        """Count one send against the subscription's per-minute limit (fixed clock-minute windows).

        Returns 0 when the send may go now, else how many ms until the next minute opens.
        """
        minute = now_ms // 60_000
        key = self._keys.rate_window(subscription_id, minute)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 120)
                sent, _ = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"cannot count webhook deliveries for rate limiting: {exc}") from exc
        return 0 if int(sent) <= per_minute else (minute + 1) * 60_000 - now_ms

    async def reschedule(
        self, delivery_id: str, *, next_ms: int, attempts: int, last_status: int | None, last_error: str | None
    ) -> DeliveryRecord | None:
        """After a failed attempt: stay pending, next attempt at `next_ms`."""
        changes = {"status": "pending", "attempts": attempts, "next_attempt_at_ms": next_ms,
                   "last_status": last_status, "last_error": last_error}

        def move(pipe: Pipeline, rec: DeliveryRecord) -> None:
            pipe.zadd(self._keys.deliveries_due(), {rec.id: next_ms})

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def mark_delivered(
        self, delivery_id: str, *, attempts: int, last_status: int | None
    ) -> DeliveryRecord | None:
        """Delivered: off the due set; the record expires after the delivered TTL."""
        now_ms = self.now_ms()
        changes = {"status": "delivered", "attempts": attempts, "next_attempt_at_ms": None,
                   "last_status": last_status, "last_error": None}

        def move(pipe: Pipeline, rec: DeliveryRecord) -> None:
            delivered = self._keys.deliveries_delivered()
            pipe.zrem(self._keys.deliveries_due(), rec.id)
            pipe.zadd(delivered, {rec.id: now_ms})
            pipe.zremrangebyscore(delivered, "-inf", now_ms - self._ttl_s * 1000)
            pipe.expire(self._keys.delivery(rec.id), self._ttl_s)

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def mark_failed(
        self, delivery_id: str, *, attempts: int, last_status: int | None, last_error: str | None
    ) -> DeliveryRecord | None:
        """Dead-lettered: off the due set, into the failed set until retried."""
        now_ms = self.now_ms()
        changes = {"status": "failed", "attempts": attempts, "next_attempt_at_ms": None,
                   "last_status": last_status, "last_error": last_error}

        def move(pipe: Pipeline, rec: DeliveryRecord) -> None:
            pipe.zrem(self._keys.deliveries_due(), rec.id)
            pipe.zadd(self._keys.deliveries_failed(), {rec.id: now_ms})

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def retry(self, delivery_id: str) -> DeliveryRecord | None:
        """A failed delivery back to pending, due now, attempts reset. None if unknown.

        Raises ValueError (naming the status) when the delivery is not failed.
        """
        now_ms = self.now_ms()
        changes = {"status": "pending", "attempts": 0, "next_attempt_at_ms": now_ms}

        def move(pipe: Pipeline, rec: DeliveryRecord) -> None:
            pipe.zrem(self._keys.deliveries_failed(), rec.id)
            pipe.zadd(self._keys.deliveries_due(), {rec.id: now_ms})

        return await self._transition(delivery_id, changes, move, only_from=("failed",), strict=True)

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        try:
            raw = await self._redis.get(self._keys.delivery(delivery_id))
        except RedisError as exc:
            raise StoreUnavailable(f"cannot read webhook delivery: {exc}") from exc
        return DeliveryRecord.from_json(raw) if raw else None

    async def list(self, status: Status, limit: int = 100, offset: int = 0) -> list[DeliveryRecord]:
        """Pending: soonest next attempt first; failed and delivered: most recent first."""
        key = self._status_key(status)
        try:
            ids = await self._redis.zrange(key, offset, offset + limit - 1, desc=status != "pending")
            return await self._records([str(i) for i in ids], drop_from=key)
        except RedisError as exc:
            raise StoreUnavailable(f"cannot list webhook deliveries: {exc}") from exc

    async def count(self, status: Status) -> int:
        try:
            return int(await self._redis.zcard(self._status_key(status)))
        except RedisError as exc:
            raise StoreUnavailable(f"cannot count webhook deliveries: {exc}") from exc

    def _status_key(self, status: Status) -> str:
        return {"pending": self._keys.deliveries_due(), "failed": self._keys.deliveries_failed(),
                "delivered": self._keys.deliveries_delivered()}[status]

    async def _records(self, ids: builtins.list[str], drop_from: str) -> builtins.list[DeliveryRecord]:
        """The records of `ids` in order; ids whose record is gone (expired) are removed from `drop_from`."""
        if not ids:
            return []
        raws = await self._redis.mget([self._keys.delivery(i) for i in ids])
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            await self._redis.zrem(drop_from, *gone)
        return [DeliveryRecord.from_json(raw) for raw in raws if raw is not None]

    async def _transition(
        self, delivery_id: str, changes: dict[str, Any], move: Callable[[Pipeline, DeliveryRecord], None],
        *, only_from: tuple[Status, ...], strict: bool = False,
    ) -> DeliveryRecord | None:
        """Apply `changes` and `move` atomically (WATCH on the record). None if the record is gone
        or, unless `strict` (then ValueError), not in a status of `only_from`."""
        key = self._keys.delivery(delivery_id)
        result: list[DeliveryRecord | None] = [None]

        async def update(pipe: Pipeline) -> None:
            raw = await pipe.get(key)
            result[0] = None
            if raw is None:
                return
            rec = DeliveryRecord.from_json(raw)
            if rec.status not in only_from:
                if strict:
                    raise ValueError(rec.status)
                return
            new = replace(rec, **changes, updated_at_ms=self.now_ms())
            pipe.multi()
            pipe.set(key, new.to_json(), keepttl=True)
            move(pipe, new)
            result[0] = new

        try:
            await self._redis.transaction(update, key)
        except RedisError as exc:
            raise StoreUnavailable(f"cannot update webhook delivery {delivery_id}: {exc}") from exc
        return result[0]
