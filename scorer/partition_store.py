"""Each Kafka partition's state, owned by one worker at a time: in Redis, or in memory.

The partition is the unit of state (docs/architecture.md): every key of one partition's customers —
states, decision views, list entries and lists, the due-time index, the processed offsets, the
fencing epoch — is under the partition's hash tag `{p<N>}` (services/names.py `PartitionKeys`), so
one script commits a partition's batch atomically on a single Redis and on a Redis Cluster alike.

    claim(p)            become the owner: bump the epoch; the stored offsets
    load(p, ids)        the stored states and list entries of some customers (a cache miss)
    commit(p, epoch, c) every write of one batch or timer round, only if the epoch is still ours
    due(p, until, n)    customers whose timers fire by `until`

A worker that lost the partition (a zombie: its session expired and another took over) has an old
epoch: its commit is refused (`Fenced`), nothing of it lands, and it gives the partition up.
`MemoryPartitionStore` is the same contract without Redis (tests, the property tests of the live
scorer); tests/scorer/test_partition_store.py runs one contract against both.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import ResponseError

from services.customer_lists import ListEntry, queue_index_change
from services.errors import FatigueError, StoreUnavailable
from services.names import PartitionKeys, RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient, eval_each


class Fenced(FatigueError):
    """Another worker became the partition's owner (its epoch is newer): this one must give it up.
    Not retriable here: the worker rejoins its consumer group and is told what it owns now."""


@dataclass(frozen=True)
class Claim:
    epoch: int
    offsets: dict[str, int]
    """topic -> the last offset of this partition whose effects are stored."""


@dataclass(frozen=True)
class Stored:
    """What the store holds of one customer: the state as stored, and its list entry."""

    state: str | bytes | None
    entry: ListEntry | None


@dataclass
class PartitionChanges:
    """Everything one batch (or timer round) of one partition writes."""

    states: dict[str, bytes] = field(default_factory=dict)
    """customer_id -> the encoded state."""
    views: dict[str, bytes] = field(default_factory=dict)
    """customer_id -> the encoded decision view."""
    entries: dict[str, tuple[ListEntry | None, ListEntry | None]] = field(default_factory=dict)
    """customer_id -> (the list entry as stored, the one to store); None: on no list."""
    due: dict[str, int | None] = field(default_factory=dict)
    """customer_id -> when its timers fire (None: never)."""
    erased: set[str] = field(default_factory=set)
    """Customers whose state, view and timer are deleted (their entries are in `entries`)."""
    offsets: dict[str, int] = field(default_factory=dict)
    alerts: Counter[str] = field(default_factory=Counter)
    """producer -> messages sent to reps (for `fatigue import`'s summary)."""

    def __bool__(self) -> bool:
        return bool(self.states or self.views or self.entries or self.due or self.erased or self.offsets
                    or self.alerts)


class PartitionStore(Protocol):
    async def claim(self, partition: int) -> Claim:
        """Become the partition's owner (bump its epoch); the offsets as the replicas a commit waits for
        hold them (an earlier owner's commit only the primary has is not started from). StoreUnavailable
        on an outage (also while no replica acknowledges)."""
        ...

    async def load(self, partition: int, customer_ids: list[str]) -> dict[str, Stored]:
        """The stored states and list entries of these customers (absent ones left out). A list entry
        that does not parse is returned as None (the commit writes the right one)."""
        ...

    async def commit(self, partition: int, epoch: int, changes: PartitionChanges) -> None:
        """All of `changes` or nothing. Fenced when `epoch` is no longer the partition's; StoreUnavailable."""
        ...

    async def due(self, partition: int, until_ms: int, limit: int) -> list[str]:
        """Up to `limit` customers whose timers fire at or before `until_ms`, earliest first."""
        ...

    async def offsets(self, partition: int, epoch: int) -> dict[str, int]:
        """The stored offsets, after a commit whose outcome is unknown (applied, or not), as the
        replicas a commit waits for hold them: never a commit only the primary has. Fenced when `epoch`
        is no longer the partition's; StoreUnavailable (also while no replica acknowledges)."""
        ...


# ---- Redis ----

_CLAIM = """
local epoch = redis.call('INCR', KEYS[1])
return {epoch, redis.call('HGETALL', KEYS[2])}
"""

_OFFSETS = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. tostring(current))
end
redis.call('SET', KEYS[1], current)
return redis.call('HGETALL', KEYS[2])
"""
"""KEYS: the epoch, the offsets. The epoch is written back unchanged: a write, so that the WAIT after it
on the same connection waits for everything the primary applied before it (WAIT waits for the
connection's own last write; the replication stream is in order), an earlier unacknowledged commit too."""

_LOAD = """
local n = #ARGV
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('HMGET', KEYS[2], unpack(ARGV))}
"""

_COMMIT = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. tostring(current))
end
local i, n = 2, #ARGV
while i <= n do
  local op, key, count = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local first, last = i + 3, i + 2 + count
  if op == 'HS' then redis.call('HSET', key, unpack(ARGV, first, last))
  elseif op == 'HD' then redis.call('HDEL', key, unpack(ARGV, first, last))
  elseif op == 'ZA' then redis.call('ZADD', key, unpack(ARGV, first, last))
  elseif op == 'ZR' then redis.call('ZREM', key, unpack(ARGV, first, last))
  elseif op == 'HI' then redis.call('HINCRBY', key, ARGV[first], ARGV[first + 1])
  else return redis.error_reply('unknown op ' .. tostring(op)) end
  i = last + 1
end
return 'OK'
"""
"""KEYS[1] is the epoch; the others are named by position in the ops of ARGV[2..]: `op key-index
count args…` (HSET field value…, HDEL field…, ZADD score member…, ZREM member…, HINCRBY field by).
Every key is under the partition's hash tag: one slot on a Cluster."""

_FENCED = re.compile(r"FENCED (\w+)")
"""The commit script's refusal, as redis-py reports it (alone, or quoted by a pipeline's error)."""

MAX_ARGS_PER_OP = 1000
"""Arguments of one HSET/ZADD/… op: far below what Lua's `unpack` can spread."""


class Ops:
    """The writes of one commit as `_COMMIT` takes them: key names become positions in KEYS. Has the
    methods of a pipeline `queue_index_change` calls."""

    def __init__(self, epoch_key: str) -> None:
        self.keys: list[str] = [epoch_key]
        self._positions: dict[str, int] = {epoch_key: 1}
        self.args: list[str | bytes | int] = []

    def _key(self, key: str) -> int:
        position = self._positions.get(key)
        if position is None:
            self.keys.append(key)
            position = self._positions[key] = len(self.keys)
        return position

    def _op(self, op: str, key: str, args: list[str | bytes | int], width: int) -> None:
        step = MAX_ARGS_PER_OP - MAX_ARGS_PER_OP % width
        for start in range(0, len(args), step):
            chunk = args[start:start + step]
            self.args += [op, self._key(key), len(chunk), *chunk]

    def hset_many(self, key: str, mapping: Mapping[str, str | bytes]) -> None:
        self._op("HS", key, [x for pair in mapping.items() for x in pair], 2)

    def hset(self, key: str, field: str, value: str, /) -> None:
        self._op("HS", key, [field, value], 2)

    def hdel(self, key: str, /, *fields: str) -> None:
        self._op("HD", key, list(fields), 1)

    def zadd(self, key: str, mapping: dict[str, int], /) -> None:
        self._op("ZA", key, [x for member, score in mapping.items() for x in (score, member)], 2)

    def zrem(self, key: str, /, *members: str) -> None:
        self._op("ZR", key, list(members), 1)

    def hincrby(self, key: str, field: str, by: int) -> None:
        self.args += ["HI", self._key(key), 2, field, by]


def commit_ops(keys: PartitionKeys, changes: PartitionChanges) -> Ops:
    ops = Ops(keys.epoch())
    if changes.erased:
        gone = sorted(changes.erased)
        ops.hdel(keys.states(), *gone)
        ops.hdel(keys.views(), *gone)
    if changes.states:
        ops.hset_many(keys.states(), changes.states)
    if changes.views:
        ops.hset_many(keys.views(), changes.views)
    for customer_id, (old, new) in changes.entries.items():
        queue_index_change(ops, keys, customer_id, old, new)
    removed = [c for c, due in changes.due.items() if due is None]
    if removed:
        ops.zrem(keys.due(), *removed)
    timers = {c: due for c, due in changes.due.items() if due is not None}
    if timers:
        ops.zadd(keys.due(), timers)
    if changes.offsets:
        ops.hset_many(keys.offsets(), {topic: str(offset).encode() for topic, offset in changes.offsets.items()})
    for producer, count in changes.alerts.items():
        ops.hincrby(keys.alerts(), producer, count)
    return ops


class RedisPartitionStore:
    """`wait_replicas` > 0: a commit returns only once that many replicas acknowledged it (Redis WAIT,
    on the connection that carried it; FATIGUE_REDIS_WAIT_REPLICAS): a failover of the primary then
    loses no commit the scorer went on from. Fewer in `wait_timeout_ms` is an outage (StoreUnavailable)
    whose commit may have been applied on the primary alone: the caller reads the stored offsets again
    (`offsets`), and those reads, like a claim's, wait for the replicas too — a plain read would return
    the unacknowledged commit as done, and a failover before the replica had it would then lose it."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 2000) -> None:
        self._redis = redis
        self._keys = keys
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._load = redis.register_script(_LOAD)

    async def claim(self, partition: int) -> Claim:
        keys = self._keys.partition(partition)
        epoch, flat = await self._replicated(partition, _CLAIM, [keys.epoch(), keys.offsets()], [],
                                             f"claiming partition {partition} in Redis")
        return Claim(int(epoch), _offsets(flat))

    async def load(self, partition: int, customer_ids: list[str]) -> dict[str, Stored]:
        if not customer_ids:
            return {}
        keys = self._keys.partition(partition)
        try:
            states, entries = await self._load(keys=[keys.states(), keys.customer_list_entries()], args=customer_ids)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading scorer state from Redis failed: {exc}") from exc
        return {c: Stored(state, _entry(entry)) for c, state, entry in zip(customer_ids, states, entries, strict=True)
                if state is not None or entry is not None}

    async def commit(self, partition: int, epoch: int, changes: PartitionChanges) -> None:
        await self.apply(partition, epoch, commit_ops(self._keys.partition(partition), changes))

    async def apply(self, partition: int, epoch: int, ops: Ops) -> None:
        """Run `ops` (every key under the partition's hash tag) as one commit, fenced by `epoch` and
        replicated as `commit` is (`fatigue repartition` moves customers with it)."""
        await self._replicated(partition, _COMMIT, ops.keys, [str(epoch), *ops.args],
                               "committing scorer state to Redis", epoch=epoch)

    async def offsets(self, partition: int, epoch: int) -> dict[str, int]:
        keys = self._keys.partition(partition)
        flat = await self._replicated(partition, _OFFSETS, [keys.epoch(), keys.offsets()], [str(epoch)],
                                      "reading stored offsets from Redis", epoch=epoch)
        return _offsets(flat)

    async def _replicated(self, partition: int, script: str, keys: list[str], args: list[str | bytes | int],
                          what: str, *, epoch: int | None = None) -> Any:
        """Run one script of the partition, then WAIT for `wait_replicas` (eval_each): its reply once
        that many replicas hold it and everything the primary applied before. Fenced when the script
        refuses the epoch; StoreUnavailable on an outage or too few acknowledgements (NotReplicated)."""
        try:
            [reply] = await eval_each(self._redis, script, [(keys, args)], replicas=self._wait_replicas,
                                      timeout_ms=self._wait_timeout_ms)
        except ResponseError as exc:
            fenced = _FENCED.search(str(exc))
            if fenced:
                raise Fenced(f"partition {partition} has another owner now (epoch {fenced.group(1)}, ours {epoch})"
                             ) from None
            raise StoreUnavailable(f"{what} failed: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"{what} failed: {exc}") from exc
        return reply

    async def due(self, partition: int, until_ms: int, limit: int) -> list[str]:
        try:
            found = await self._redis.zrangebyscore(self._keys.partition(partition).due(), "-inf", until_ms, 0, limit)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading due timers from Redis failed: {exc}") from exc
        return [str(c) for c in found]


def _offsets(flat: list[Any]) -> dict[str, int]:
    """topic -> offset, from an HGETALL as a script returns it (a flat list)."""
    return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _entry(raw: Any) -> ListEntry | None:
    if not raw:
        return None
    try:
        return ListEntry.from_json(raw)
    except (ValueError, TypeError):
        return None  # rewritten from the state at the customer's next commit


# ---- memory ----


@dataclass
class _Partition:
    epoch: int = 0
    states: dict[str, bytes] = field(default_factory=dict)
    views: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, ListEntry] = field(default_factory=dict)
    due: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    alerts: Counter[str] = field(default_factory=Counter)


class MemoryPartitionStore:
    """The same contract in a dict: for tests and the property tests of the live scorer."""

    def __init__(self) -> None:
        self.partitions: dict[int, _Partition] = {}

    def _p(self, partition: int) -> _Partition:
        return self.partitions.setdefault(partition, _Partition())

    async def claim(self, partition: int) -> Claim:
        p = self._p(partition)
        p.epoch += 1
        return Claim(p.epoch, dict(p.offsets))

    async def load(self, partition: int, customer_ids: list[str]) -> dict[str, Stored]:
        p = self._p(partition)
        return {c: Stored(p.states.get(c), p.entries.get(c)) for c in customer_ids
                if c in p.states or c in p.entries}

    async def commit(self, partition: int, epoch: int, changes: PartitionChanges) -> None:
        p = self._p(partition)
        if epoch != p.epoch:
            raise Fenced(f"partition {partition} has another owner now (epoch {p.epoch}, ours {epoch})")
        for customer_id in changes.erased:
            p.states.pop(customer_id, None)
            p.views.pop(customer_id, None)
        p.states.update(changes.states)
        p.views.update(changes.views)
        for customer_id, (_, new) in changes.entries.items():
            if new is None:
                p.entries.pop(customer_id, None)
            else:
                p.entries[customer_id] = new
        for customer_id, due in changes.due.items():
            if due is None:
                p.due.pop(customer_id, None)
            else:
                p.due[customer_id] = due
        p.offsets.update(changes.offsets)
        p.alerts.update(changes.alerts)

    async def offsets(self, partition: int, epoch: int) -> dict[str, int]:
        p = self._p(partition)
        if epoch != p.epoch:
            raise Fenced(f"partition {partition} has another owner now (epoch {p.epoch}, ours {epoch})")
        return dict(p.offsets)

    async def due(self, partition: int, until_ms: int, limit: int) -> list[str]:
        p = self._p(partition)
        return [c for c, _ in sorted(((c, d) for c, d in p.due.items() if d <= until_ms),
                                     key=lambda item: (item[1], item[0]))][:limit]
