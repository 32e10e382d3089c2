"""Moving customers to their partition under a new partition count (`fatigue repartition`, step e).

A customer's keys live in the partition murmur2 of its id puts it in (services/partitions.py); under
another count most customers belong elsewhere. For every old partition, `Mover` scans its states,
decision views, list entries and due index (HSCAN / ZSCAN, a batch at a time: memory bounded by the
batch, not by the customers) and moves each customer whose partition changes:

    read its state, view, list entry and due time in the old partition (one pipeline)
    -> write them into the new one: the state, the view, the entry and the list memberships it
       implies, the due time (one script per new partition)
    -> delete them from the old one, list memberships included (one script)

Each script touches the keys of one partition only (one hash slot on a Redis Cluster: no cross-slot
script). Copy first, then delete: a crash at any point leaves every customer whole in the old
partition, in the new one, or in both with the same values, and the next run finishes it (it finds the
customer in the old partition, copies it again and deletes it). The partitions' processed offsets stay
where they are (each partition's log is unchanged), as do the alert counters (per producer, summed over
the partitions by `fatigue import`). Every partition written is claimed first (its epoch bumped): a
scorer that is still running is fenced rather than overwriting a move.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from scorer.partition_store import Ops, RedisPartitionStore
from services.customer_lists import ListEntry, queue_index_change
from services.errors import StoreUnavailable
from services.names import PartitionKeys, RedisKeys
from services.partitions import partition_of
from services.redisio import REDIS_ERRORS, RedisClient

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Found:
    """What one customer has in a partition (None: nothing of that kind)."""

    customer_id: str
    state: str | None
    view: str | None
    entry: str | None
    """The list entry as stored (JSON)."""
    due_ms: int | None

    def __bool__(self) -> bool:
        return any(x is not None for x in (self.state, self.view, self.entry, self.due_ms))

    def parsed_entry(self) -> ListEntry | None:
        """The list entry; None when there is none or it does not parse (then it is moved as it is)."""
        try:
            return None if self.entry is None else ListEntry.from_json(self.entry)
        except (ValueError, TypeError):
            return None


def copy_ops(keys: PartitionKeys, found: list[Found]) -> Ops:
    """Write these customers into the partition of `keys`: state, view, list entry and memberships, due."""
    ops = Ops(keys.epoch())
    states = {f.customer_id: f.state for f in found if f.state is not None}
    if states:
        ops.hset_many(keys.states(), states)
    views = {f.customer_id: f.view for f in found if f.view is not None}
    if views:
        ops.hset_many(keys.views(), views)
    for f in found:
        entry = f.parsed_entry()
        if entry is not None:
            queue_index_change(ops, keys, f.customer_id, None, entry)
        elif f.entry is not None:
            ops.hset(keys.customer_list_entries(), f.customer_id, f.entry)
    dues = {f.customer_id: f.due_ms for f in found if f.due_ms is not None}
    if dues:
        ops.zadd(keys.due(), dues)
    return ops


def delete_ops(keys: PartitionKeys, found: list[Found]) -> Ops:
    """Delete these customers from the partition of `keys`, list memberships included."""
    ops = Ops(keys.epoch())
    ids = [f.customer_id for f in found]
    ops.hdel(keys.states(), *ids)
    ops.hdel(keys.views(), *ids)
    for f in found:
        entry = f.parsed_entry()
        if entry is not None:
            for key in entry.keys(keys):
                ops.zrem(key, f.customer_id)
    ops.hdel(keys.customer_list_entries(), *ids)
    ops.zrem(keys.due(), *ids)
    return ops


class Mover:
    """Moves the customers of partitions 0..`old`-1 whose partition under `target` is another one.
    StoreUnavailable on an outage (run it again: it takes up where it stopped); Fenced when a scorer
    claimed a partition meanwhile."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, old: int, target: int, *, batch: int = DEFAULT_BATCH,
                 wait_replicas: int = 0, wait_timeout_ms: int = 2000) -> None:
        self._redis = redis
        self._keys = keys
        self.old = old
        self.target = target
        self._batch = batch
        self._store = RedisPartitionStore(redis, keys, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
        self._epochs: dict[int, int] = {}

    async def run(self, on_partition: Callable[[int, int], None] = lambda p, n: None) -> Counter[int]:
        """Old partition -> customers moved out of it; `on_partition(p, n)` after each one."""
        moved: Counter[int] = Counter()
        for partition in range(self.old):
            moved[partition] = await self.partition(partition)
            on_partition(partition, moved[partition])
        return moved

    async def partition(self, partition: int) -> int:
        keys = self._keys.partition(partition)
        moved = 0
        for scan in (self._hscan(keys.states()), self._hscan(keys.views()),
                     self._hscan(keys.customer_list_entries()), self._zscan(keys.due())):
            async for customer_ids in self._misplaced(partition, scan):
                moved += await self.move(partition, customer_ids)
        return moved

    async def move(self, partition: int, customer_ids: list[str]) -> int:
        """Copy these customers of `partition` to theirs, then delete them from it; how many had anything."""
        found = [f for f in await self._read(partition, customer_ids) if f]
        if found:
            await self._copy(found)
            await self._delete(partition, found)
        return len(found)

    async def _copy(self, found: list[Found]) -> None:
        by_target: dict[int, list[Found]] = {}
        for f in found:
            by_target.setdefault(partition_of(f.customer_id, self.target), []).append(f)
        for target, customers in sorted(by_target.items()):
            await self._store.apply(target, await self._epoch(target),
                                    copy_ops(self._keys.partition(target), customers))

    async def _delete(self, partition: int, found: list[Found]) -> None:
        await self._store.apply(partition, await self._epoch(partition),
                                delete_ops(self._keys.partition(partition), found))

    async def _epoch(self, partition: int) -> int:
        if partition not in self._epochs:
            self._epochs[partition] = (await self._store.claim(partition)).epoch
        return self._epochs[partition]

    async def _read(self, partition: int, customer_ids: list[str]) -> list[Found]:
        keys = self._keys.partition(partition)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.states(), customer_ids)
                pipe.hmget(keys.views(), customer_ids)
                pipe.hmget(keys.customer_list_entries(), customer_ids)
                pipe.zmscore(keys.due(), customer_ids)
                states, views, entries, dues = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading partition {partition}'s customers from Redis failed: {exc}") from exc
        return [Found(c, s, v, e, None if d is None else int(d))
                for c, s, v, e, d in zip(customer_ids, states, views, entries, dues, strict=True)]

    async def _misplaced(self, partition: int, members: AsyncIterator[str]) -> AsyncIterator[list[str]]:
        """The scanned customers whose partition under the new count is not `partition`, a batch at a time."""
        chunk: list[str] = []
        async for customer_id in members:
            if partition_of(customer_id, self.target) != partition:
                chunk.append(customer_id)
                if len(chunk) == self._batch:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    async def _hscan(self, key: str) -> AsyncIterator[str]:
        try:
            async for item in self._redis.hscan_iter(key, count=self._batch):
                yield _member(item)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"scanning {key} in Redis failed: {exc}") from exc

    async def _zscan(self, key: str) -> AsyncIterator[str]:
        try:
            async for item in self._redis.zscan_iter(key, count=self._batch):
                yield _member(item)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"scanning {key} in Redis failed: {exc}") from exc


def _member(item: Any) -> str:
    """A field of HSCAN / member of ZSCAN: redis-py yields (field, value) / (member, score) pairs."""
    return str(item[0] if isinstance(item, tuple) else item)
