"""Durable webhook deliveries in Redis: the notifier schedules and updates them, the API reads them.

A delivery is one action for one subscription; its id is the `webhook-id` (stable per pair), so
scheduling the same pair twice keeps the first record. Pending deliveries sit in a sorted set by
next attempt time; a worker *claims* due ones by pushing their time `lease_ms` into the future,
so a worker that dies mid-attempt loses its claim and the delivery becomes due again
(at-least-once: receivers de-duplicate by webhook-id). Failed deliveries (permanent error or out
of attempts) are kept in a dead-letter set, and in one per subscription (for listing and replaying a
subscription's dead letters), until retried or until `dead_letter_ttl_s` after they failed. Delivered
ones, and *digested* ones (folded into a digest delivery instead of being sent, see
services/delivery/digests.py), expire `delivered_ttl_s` after that. The status sets are trimmed by score when
they grow and readers drop ids whose record has expired.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from services.actions import Action
from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import REDIS_ERRORS, AnyPipeline, RedisClient, check_layout, eval_each, read_watched, watched

Status = Literal["pending", "delivered", "failed", "digested"]
STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed", "digested")
BY_SUBSCRIPTION: tuple[Status, ...] = ("failed",)
"""The statuses `list` can filter by subscription (an index per subscription exists only for these)."""

_REPLAY_BATCH = 100
"""Records replayed per Redis transaction (each one WATCHes that many record keys)."""

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


# KEYS[1] = a subscription's held set, KEYS[2] = due set; ARGV[1] = now ms. How many were made due.
_RELEASE = """
local held = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local released = 0
for i = 1, #held, 2 do
  local due = redis.call('ZSCORE', KEYS[2], held[i])
  if due and tonumber(due) == tonumber(held[i + 1]) and tonumber(due) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[2], ARGV[1], held[i])
    released = released + 1
  end
end
redis.call('DEL', KEYS[1])
return released
"""
HELD_KEEP_S = 24 * 3600
"""A held set outlives any circuit's open period; it is deleted when released."""


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
    digest_id: str | None = None
    """Status digested: the id of the digest delivery the action was folded into."""

    @classmethod
    def new(cls, delivery_id: str, action: Action, subscription_id: str, now_ms: int) -> DeliveryRecord:
        return cls(delivery_id, action, subscription_id, "pending", 0, now_ms, now_ms, now_ms)

    def to_json(self) -> str:
        # vars(), not asdict(): asdict deep-copies the action on every state change (a tenth of the
        # notifier's CPU per delivery in bench/delivery_throughput.py); json.dumps copies nothing.
        fields = dict(vars(self))
        if fields["digest_id"] is None:  # records without it read the same with older code
            del fields["digest_id"]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeliveryRecord:
        return cls(**json.loads(raw))


class DeliveryStore:
    """Deliveries on Redis under `keys`. Every method raises StoreUnavailable when Redis fails.

    `delivered_ttl_s`: how long a delivered or digested record stays readable. `dead_letter_ttl_s`:
    how long a failed record stays (a retry makes it permanent again). `clock`: seconds since the epoch.
    `wait_replicas` / `wait_timeout_ms`: `schedule` returns only once that many replicas acknowledged
    the new records (Redis WAIT), so the caller may commit what they came from (0: no wait).

    Shards (services/names.py): a delivery's record and every set it moves through share its shard's
    hash tag, so each script and transaction here stays in one slot of a Redis Cluster. One Redis has
    one shard; readers over a status (claim, list, count, replay, release) go through every shard.
    """

    def __init__(
        self, redis: RedisClient, keys: RedisKeys, *, delivered_ttl_s: int = 7 * 24 * 3600,
        dead_letter_ttl_s: int = 30 * 24 * 3600, clock: Callable[[], float] = time.time,
        wait_replicas: int = 0, wait_timeout_ms: int = 2000,
    ) -> None:
        check_layout(redis, keys)
        self._redis = redis
        self._keys = keys
        self._ttl_s = delivered_ttl_s
        self._dead_letter_ttl_s = dead_letter_ttl_s
        self._clock = clock
        self._wait_replicas, self._wait_timeout_ms = wait_replicas, wait_timeout_ms
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._shards = range(keys.delivery_shards)
        self._first_shard = 0
        """Where the next claim starts, moved on every claim so that no shard waits behind the others."""

    def _shard(self, delivery_id: str) -> int:
        return self._keys.delivery_shard(delivery_id)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def schedule(self, records: Iterable[DeliveryRecord]) -> builtins.list[str]:
        """Store pending records due at their `next_attempt_at_ms`; ids that exist are left alone.

        Returns the ids newly scheduled. Once this returns, the deliveries survive a restart (and, with
        `wait_replicas`, a failover).
        """
        records = list(records)
        calls: list[tuple[list[str], list[str | int]]] = [
            ([self._keys.deliveries_due(self._shard(rec.id)), self._keys.delivery(rec.id)],
             [rec.to_json(), rec.next_attempt_at_ms or 0, rec.id]) for rec in records]
        try:
            added = await eval_each(self._redis, _SCHEDULE, calls, replicas=self._wait_replicas,
                                    timeout_ms=self._wait_timeout_ms)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot schedule webhook deliveries: {exc}") from exc
        return [rec.id for rec, ok in zip(records, added, strict=True) if ok]

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> builtins.list[DeliveryRecord]:
        """Pending records due at `now_ms` (at most `limit`), each claimed until `now_ms + lease_ms`."""
        claimed: builtins.list[DeliveryRecord] = []
        first, self._first_shard = self._first_shard, (self._first_shard + 1) % len(self._shards)
        try:
            for shard in [*self._shards[first:], *self._shards[:first]]:
                remaining = limit - len(claimed)
                if remaining <= 0:
                    break
                due = self._keys.deliveries_due(shard)
                ids = await self._claim(keys=[due], args=[now_ms, lease_ms, remaining])
                claimed += await self._records([str(i) for i in ids], drop_from=due)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot claim due webhook deliveries: {exc}") from exc
        return claimed

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
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot count webhook deliveries for rate limiting: {exc}") from exc
        return 0 if int(sent) <= per_minute else (minute + 1) * 60_000 - now_ms

    async def reschedule(
        self, delivery_id: str, *, next_ms: int, attempts: int, last_status: int | None, last_error: str | None
    ) -> DeliveryRecord | None:
        """After a failed attempt: stay pending, next attempt at `next_ms`."""
        changes = {"status": "pending", "attempts": attempts, "next_attempt_at_ms": next_ms,
                   "last_status": last_status, "last_error": last_error}

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            pipe.zadd(self._keys.deliveries_due(self._shard(rec.id)), {rec.id: next_ms})

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def hold(
        self, delivery_id: str, subscription_id: str, *, until_ms: int, last_error: str | None
    ) -> DeliveryRecord | None:
        """Held back by the endpoint's open circuit until `until_ms` (no attempt spent), and noted in
        the subscription's held set so that `release_held` can make it due at once when the circuit
        closes."""
        changes = {"next_attempt_at_ms": until_ms, "last_error": last_error}
        shard = self._shard(delivery_id)
        held = self._keys.deliveries_held(subscription_id, shard)

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            pipe.zadd(self._keys.deliveries_due(shard), {rec.id: until_ms})
            pipe.zadd(held, {rec.id: until_ms})
            pipe.expire(held, HELD_KEEP_S)

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def release_held(self, subscription_id: str, now_ms: int) -> int:
        """Make the subscription's held deliveries due at `now_ms`; returns how many. A delivery whose
        due time is no longer the one it was held until (claimed, retried, finished since) is left alone."""
        released = 0
        try:
            for shard in self._shards:
                keys = [self._keys.deliveries_held(subscription_id, shard), self._keys.deliveries_due(shard)]
                released += int(await self._release(keys=keys, args=[now_ms]))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot release held webhook deliveries: {exc}") from exc
        return released

    async def mark_delivered(
        self, delivery_id: str, *, attempts: int, last_status: int | None
    ) -> DeliveryRecord | None:
        """Delivered: off the due set; the record expires after the delivered TTL."""
        now_ms = self.now_ms()
        changes = {"status": "delivered", "attempts": attempts, "next_attempt_at_ms": None,
                   "last_status": last_status, "last_error": None}

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            self._finish(pipe, rec, self._keys.deliveries_delivered(self._shard(rec.id)), now_ms)

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def mark_digested(self, delivery_id: str, *, digest_id: str) -> DeliveryRecord | None:
        """Folded into the digest delivery `digest_id` instead of being sent: off the due set, into the
        digested set; the record expires after the delivered TTL. None unless it was pending."""
        now_ms = self.now_ms()
        changes = {"status": "digested", "next_attempt_at_ms": None, "digest_id": digest_id}

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            self._finish(pipe, rec, self._keys.deliveries_digested(self._shard(rec.id)), now_ms)

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def replace_action(self, delivery_id: str, action: Mapping[str, Any]) -> DeliveryRecord | None:
        """A pending delivery's action replaced (status, attempts, due time and claim unchanged).

        None unless it is pending. Used to fix a digest's content before its first attempt.
        """
        changes = {"action": cast(Action, dict(action))}
        return await self._transition(delivery_id, changes, lambda pipe, rec: None, only_from=("pending",))

    async def mark_failed(
        self, delivery_id: str, *, attempts: int, last_status: int | None, last_error: str | None
    ) -> DeliveryRecord | None:
        """Dead-lettered: off the due set, into the failed sets (global and the subscription's) until
        retried; the record expires after the dead-letter TTL."""
        now_ms = self.now_ms()
        changes = {"status": "failed", "attempts": attempts, "next_attempt_at_ms": None,
                   "last_status": last_status, "last_error": last_error}

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            ttl_s = self._dead_letter_ttl_s
            shard = self._shard(rec.id)
            by_subscription = self._keys.deliveries_failed_by_subscription(rec.subscription_id, shard)
            pipe.zrem(self._keys.deliveries_due(shard), rec.id)
            for key in (self._keys.deliveries_failed(shard), by_subscription):
                pipe.zadd(key, {rec.id: now_ms})
                pipe.zremrangebyscore(key, "-inf", now_ms - ttl_s * 1000)
            pipe.expire(by_subscription, ttl_s)  # outlives its newest member's record: gone once all are
            pipe.expire(self._keys.delivery(rec.id), ttl_s)

        return await self._transition(delivery_id, changes, move, only_from=("pending",))

    async def retry(self, delivery_id: str) -> DeliveryRecord | None:
        """A failed delivery back to pending, due now, attempts reset. None if unknown.

        Raises ValueError (naming the status) when the delivery is not failed.
        """
        now_ms = self.now_ms()
        changes = {"status": "pending", "attempts": 0, "next_attempt_at_ms": now_ms}

        def move(pipe: AnyPipeline, rec: DeliveryRecord) -> None:
            self._back_to_pending(pipe, rec, now_ms)

        return await self._transition(delivery_id, changes, move, only_from=("failed",), strict=True)

    async def replay_failed(self, subscription_id: str, since_ms: int | None = None, limit: int = 10_000) -> int:
        """Every dead letter of one subscription (dead-lettered at or after `since_ms`; the oldest
        `limit`) back to pending as `retry` does. Returns how many were replayed.

        Each record moves atomically (WATCH, in batches of _REPLAY_BATCH of one shard); records no
        longer failed by then (retried or expired meanwhile) are skipped and not counted.
        """
        if limit <= 0:
            return 0
        try:
            ids = await self._failed_ids(subscription_id, since_ms, limit)
            replayed = 0
            for shard, shard_ids in self._by_shard(ids).items():
                for start in range(0, len(shard_ids), _REPLAY_BATCH):
                    batch = shard_ids[start:start + _REPLAY_BATCH]
                    replayed += await self._replay_batch(subscription_id, shard, batch)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot replay webhook deliveries of {subscription_id}: {exc}") from exc
        return replayed

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        try:
            raw = await self._redis.get(self._keys.delivery(delivery_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot read webhook delivery: {exc}") from exc
        return DeliveryRecord.from_json(raw) if raw else None

    async def list(
        self, status: Status, limit: int = 100, offset: int = 0, subscription_id: str | None = None
    ) -> builtins.list[DeliveryRecord]:
        """Pending: soonest next attempt first; the others: most recent first.

        `subscription_id`: that subscription's only, for a status in BY_SUBSCRIPTION (ValueError otherwise).
        """
        if subscription_id is None:
            def key_of(shard: int) -> str:
                return self._keys.deliveries_in(status, shard)
        elif status in BY_SUBSCRIPTION:
            def key_of(shard: int) -> str:
                return self._keys.deliveries_failed_by_subscription(subscription_id, shard)
        else:
            raise ValueError(f"deliveries can be listed by subscription only with status {', '.join(BY_SUBSCRIPTION)}")
        try:
            await self._trim(status, key_of)
            ids = await self._page(key_of, offset, limit, desc=status != "pending")
            found: dict[str, DeliveryRecord] = {}
            for shard, shard_ids in self._by_shard(ids).items():
                found.update((rec.id, rec) for rec in await self._records(shard_ids, drop_from=key_of(shard)))
            return [found[i] for i in ids if i in found]
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot list webhook deliveries: {exc}") from exc

    async def count(self, status: Status) -> int:
        try:
            await self._trim(status, lambda shard: self._keys.deliveries_in(status, shard))
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in self._shards:
                    pipe.zcard(self._keys.deliveries_in(status, shard))
                return sum(int(n) for n in await pipe.execute())
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot count webhook deliveries: {exc}") from exc

    async def _trim(self, status: Status, key_of: Callable[[int], str]) -> None:
        """Drop the members older than their record's TTL from the sets `key_of(shard)` of a status
        that expires (failed, delivered, digested). Writers trim the set they write to; readers trim
        too, as on a Cluster a shard no one writes to would keep them until then."""
        keep_s = {"failed": self._dead_letter_ttl_s, "delivered": self._ttl_s, "digested": self._ttl_s}.get(status)
        if keep_s is None:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in self._shards:
                pipe.zremrangebyscore(key_of(shard), "-inf", self.now_ms() - keep_s * 1000)
            await pipe.execute()

    def _by_shard(self, ids: Iterable[str]) -> dict[int, builtins.list[str]]:
        """`ids` grouped by shard, each group in the order given."""
        groups: dict[int, builtins.list[str]] = {}
        for delivery_id in ids:
            groups.setdefault(self._shard(delivery_id), []).append(delivery_id)
        return groups

    async def _page(self, key_of: Callable[[int], str], offset: int, limit: int, *, desc: bool) -> builtins.list[str]:
        """The ids at [offset, offset + limit) of the sets `key_of(shard)` taken together, ordered by
        score as one sorted set would be (ties by id)."""
        if len(self._shards) == 1:
            return [str(i) for i in await self._redis.zrange(key_of(0), offset, offset + limit - 1, desc=desc)]
        scored: builtins.list[tuple[float, str]] = []
        for shard in self._shards:
            rows = await self._redis.zrange(key_of(shard), 0, offset + limit - 1, desc=desc, withscores=True)
            scored += _scored(rows)
        scored.sort(reverse=desc)
        return [member for _, member in scored[offset:offset + limit]]

    def _finish(self, pipe: AnyPipeline, rec: DeliveryRecord, done: str, now_ms: int) -> None:
        """Off the due set into the `done` set (trimmed by score); the record expires after the TTL."""
        pipe.zrem(self._keys.deliveries_due(self._shard(rec.id)), rec.id)
        pipe.zadd(done, {rec.id: now_ms})
        pipe.zremrangebyscore(done, "-inf", now_ms - self._ttl_s * 1000)
        pipe.expire(self._keys.delivery(rec.id), self._ttl_s)

    def _back_to_pending(self, pipe: AnyPipeline, rec: DeliveryRecord, now_ms: int) -> None:
        """A failed record (already rewritten as pending) off the failed sets, due at `now_ms`, kept for good."""
        shard = self._shard(rec.id)
        pipe.persist(self._keys.delivery(rec.id))
        pipe.zrem(self._keys.deliveries_failed(shard), rec.id)
        pipe.zrem(self._keys.deliveries_failed_by_subscription(rec.subscription_id, shard), rec.id)
        pipe.zadd(self._keys.deliveries_due(shard), {rec.id: now_ms})

    async def _failed_ids(self, subscription_id: str, since_ms: int | None, limit: int) -> builtins.list[str]:
        """Ids in the subscription's dead-letter indexes failed at or after `since_ms`, the oldest `limit`."""
        low: int | str = "-inf" if since_ms is None else since_ms
        scored: builtins.list[tuple[float, str]] = []
        for shard in self._shards:
            index = self._keys.deliveries_failed_by_subscription(subscription_id, shard)
            rows = await self._redis.zrangebyscore(index, low, "+inf", start=0, num=limit, withscores=True)
            scored += _scored(rows)
        return [member for _, member in sorted(scored)[:limit]]

    async def _replay_batch(self, subscription_id: str, shard: int, ids: builtins.list[str]) -> int:
        """`ids` (of one shard) still failed and of that subscription back to pending in one
        transaction; how many."""
        index = self._keys.deliveries_failed_by_subscription(subscription_id, shard)
        record_keys = [self._keys.delivery(i) for i in ids]
        replayed = [0]

        async def update(pipe: AnyPipeline) -> None:
            raws = await read_watched(pipe, record_keys)
            now_ms = self.now_ms()
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            records = [DeliveryRecord.from_json(raw) for raw in raws if raw is not None]
            todo = [replace(rec, status="pending", attempts=0, next_attempt_at_ms=now_ms, updated_at_ms=now_ms)
                    for rec in records if rec.status == "failed" and rec.subscription_id == subscription_id]
            pipe.multi()
            if gone:
                pipe.zrem(index, *gone)
            for new in todo:
                pipe.set(self._keys.delivery(new.id), new.to_json(), keepttl=True)
                self._back_to_pending(pipe, new, now_ms)
            replayed[0] = len(todo)

        await watched(self._redis, record_keys, update)
        return replayed[0]

    async def _records(self, ids: builtins.list[str], drop_from: str) -> builtins.list[DeliveryRecord]:
        """The records of `ids` (of one shard) in order; ids whose record is gone (expired) are removed
        from `drop_from` (a set of that shard)."""
        if not ids:
            return []
        raws = await self._redis.mget([self._keys.delivery(i) for i in ids])
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            await self._redis.zrem(drop_from, *gone)
        return [DeliveryRecord.from_json(raw) for raw in raws if raw is not None]

    async def _transition(
        self, delivery_id: str, changes: dict[str, Any], move: Callable[[AnyPipeline, DeliveryRecord], None],
        *, only_from: tuple[Status, ...], strict: bool = False,
    ) -> DeliveryRecord | None:
        """Apply `changes` and `move` atomically (WATCH on the record). None if the record is gone
        or, unless `strict` (then ValueError), not in a status of `only_from`."""
        key = self._keys.delivery(delivery_id)
        result: list[DeliveryRecord | None] = [None]

        async def update(pipe: AnyPipeline) -> None:
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
            await watched(self._redis, [key], update)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot update webhook delivery {delivery_id}: {exc}") from exc
        return result[0]


def _scored(rows: Any) -> list[tuple[float, str]]:
    """(score, member) of a WITHSCORES reply ([member, score] pairs)."""
    return [(float(score), str(member)) for member, score in rows]
