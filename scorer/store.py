"""Scorer state in Redis, committed atomically with the Kafka offsets it reflects.

Why Redis and not Faust's changelog tables: Faust decides that changelog recovery is complete from
`end_offsets`, which the embedded broker reports wrongly after batched writes, so a restarted
worker could silently resume with partial state. Here every batch's effects — customer states,
snapshots, due times — and the highest offset processed per topic-partition are written in one
MULTI/EXEC transaction. After a crash the consumer resumes from Kafka's committed offset (never
ahead of Redis), and records at or below the stored offset are skipped: nothing lost, nothing
counted twice, on any Kafka-protocol broker. See docs/architecture.md.

Concurrency: the state keys of a batch are WATCHed while read; if another writer (a zombie worker
during a rebalance) changed one before the commit, the commit fails with CommitConflict and the
batch is recomputed from fresh state.

The lists reps work from (services/customer_lists.py) are written in the same transaction: each
customer's entry as last written is read with the states, and the commit moves it to where the
lifecycle puts the customer now — so the lists are exact whenever the states are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, WatchError

from scorer.core import lifecycle
from scorer.core.state import CustomerState
from scorer.state_cache import StateCache
from services.customer_lists import ListEntry, queue_index_change
from services.erasure import customer_keys
from services.errors import FatigueError, StoreUnavailable
from services.names import RedisKeys
from services.redisio import AnyPipeline, RedisClient
from services.stored_values import ValueEncoder, loads


class CommitConflict(FatigueError):
    """Another writer changed a customer of this batch; recompute and try again."""

    retriable = True


class StateUnreadable(Exception):
    """A stored customer state is not a value or a state this build reads (not an outage).

    The processor treats it like a failure of the core: that customer's records are dead-lettered
    instead of stopping everyone's."""


@dataclass
class Changes:
    """Everything one batch (or one timer round) writes."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    due: dict[int, dict[str, int | None]] = field(default_factory=dict)
    """partition -> customer_id -> next due ms (None: remove)."""
    offsets: dict[str, int] = field(default_factory=dict)
    """`topic/partition` -> highest processed offset."""
    erased: set[str] = field(default_factory=set)
    """Customers erased by this batch: every per-customer key deleted (services/erasure.py)."""
    lists: dict[str, ListEntry | None] = field(default_factory=dict)
    """customer_id -> where the customer is on the lists now (None: on none)."""


def tp_field(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def list_entry_of(state: CustomerState) -> ListEntry | None:
    """The customer's entry on the lists reps work from (scorer/core/lifecycle.py `list_entry`)."""
    found = lifecycle.list_entry(state)
    if found is None:
        return None
    profile = state.profile or {}
    return ListEntry(found[0], found[1], profile.get("owner_rep_id"), profile.get("tier"), profile.get("stage"))


class StateStore:
    def __init__(self, redis: RedisClient, keys: RedisKeys, group: str, encoder: ValueEncoder | None = None,
                 cache: StateCache | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._encoder = encoder or ValueEncoder()
        """How states and snapshots are written (services/stored_values.py); any format is read."""
        self._cache = cache
        """States this store committed, decoded (scorer/state_cache.py); None: decode every read."""

    async def read(self, customer_ids: Iterable[str], tps: Iterable[str]) -> Transaction:
        """Start a transaction: WATCH and read the customers' states and the offsets of `tps`."""
        ids = sorted(set(customer_ids))
        tp_list = sorted(set(tps))
        pipe = self._redis.pipeline(transaction=True)
        try:
            state_keys = [self._keys.state(c) for c in ids]
            if state_keys:
                await pipe.watch(*state_keys)
            raw_states = await pipe.mget(state_keys) if state_keys else []
            # Without a WATCH the pipeline only buffers commands: read the offsets directly then.
            reader = pipe if state_keys else self._redis
            raw_offsets = await reader.hmget(self._keys.offsets(self._group), tp_list) if tp_list else []
            raw_entries = await pipe.hmget(self._keys.customer_list_entries(), ids) if ids else []
        except RedisError as exc:
            await pipe.reset()
            raise StoreUnavailable(f"reading scorer state from Redis failed: {exc}") from exc
        try:
            states = self._states(ids, raw_states)
            offsets = {tp: int(o) for tp, o in zip(tp_list, raw_offsets, strict=True) if o is not None}
            entries = {c: _parse_entry(c, e) for c, e in zip(ids, raw_entries, strict=True) if e}
        except (StateUnreadable, ValueError, TypeError):
            await pipe.reset()
            raise
        return Transaction(pipe, self._keys, self._group, states, offsets, entries, encoder=self._encoder,
                           cache=self._cache)

    def _states(self, ids: list[str], raw_states: list[str | bytes | None]) -> dict[str, CustomerState]:
        cache, states = self._cache, {}
        for customer_id, raw in zip(ids, raw_states, strict=True):
            if raw:
                cached = None if cache is None else cache.take(customer_id, raw)
                states[customer_id] = cached if cached is not None else _parse_state(customer_id, raw)
        return states

    async def reindex_lists(self, customer_ids: list[str], attempts: int = 5) -> int:
        """Put these customers on the lists their stored states say (for states written before the
        lists existed); how many moved. Recomputed when a scorer changes one meanwhile."""
        for _ in range(attempts - 1):
            try:
                return await self._reindex_once(customer_ids)
            except CommitConflict:
                continue
        return await self._reindex_once(customer_ids)

    async def _reindex_once(self, customer_ids: list[str]) -> int:
        txn = await self.read(customer_ids, [])
        changes = Changes(lists={c: list_entry_of(s) for c, s in txn.states.items()})
        moved = sum(1 for c, entry in changes.lists.items() if txn.list_entries.get(c) != entry)
        await txn.commit(changes)
        return moved

    async def customer_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN step over the stored states: (next cursor, 0 at the end; customer ids)."""
        prefix = self._keys.state("")
        try:
            cursor, found = await self._redis.scan(cursor, match=f"{prefix}*", count=count)
        except RedisError as exc:
            raise StoreUnavailable(f"listing scorer states in Redis failed: {exc}") from exc
        return int(cursor), [str(key)[len(prefix):] for key in found]

    async def postpone(self, partition: int, customer_id: str, until_ms: int) -> None:
        """Move one customer's due time (its timer failed; try again later)."""
        try:
            await self._redis.zadd(self._keys.due(self._group, partition), {customer_id: until_ms})
        except RedisError as exc:
            raise StoreUnavailable(f"postponing a due timer in Redis failed: {exc}") from exc

    async def due_customers(self, partition: int, now_ms: int, limit: int) -> list[str]:
        try:
            found = await self._redis.zrangebyscore(self._keys.due(self._group, partition), "-inf", now_ms, 0, limit)
            return [str(customer_id) for customer_id in found]
        except RedisError as exc:
            raise StoreUnavailable(f"reading due timers from Redis failed: {exc}") from exc


def _parse_entry(customer_id: str, raw: str | bytes) -> ListEntry:
    try:
        return ListEntry.from_json(raw)
    except Exception as exc:  # a corrupt entry makes that customer's records dead letters, nobody else's
        raise StateUnreadable(f"list entry of {customer_id!r} is unreadable: {type(exc).__name__}: {exc}") from exc


def _parse_state(customer_id: str, raw: str | bytes) -> CustomerState:
    try:
        return CustomerState.from_json(loads(raw))
    except Exception as exc:  # any shape a hand-written or corrupt value may have
        raise StateUnreadable(f"stored state of {customer_id!r} is unreadable: {type(exc).__name__}: {exc}") from exc


APPLY_OPS = """
local i, n = 1, #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'M' then
    local n = tonumber(ARGV[i+1])
    redis.call('MSET', unpack(ARGV, i + 2, i + 1 + 2 * n)); i = i + 2 + 2 * n
  elseif op == 'D' then redis.call('DEL', ARGV[i+1]); i = i + 2
  elseif op == 'Z' then
    local n = tonumber(ARGV[i+2])
    redis.call('ZADD', ARGV[i+1], unpack(ARGV, i + 3, i + 2 + 2 * n)); i = i + 3 + 2 * n
  elseif op == 'R' then redis.call('ZREM', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'H' then redis.call('HSET', ARGV[i+1], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'X' then redis.call('HDEL', ARGV[i+1], ARGV[i+2]); i = i + 3
  else return redis.error_reply('unknown op ' .. tostring(op)) end
end
return n
"""
"""Applies a flat list of writes (op code, then its arguments), all or nothing (Redis runs a script
atomically); queued inside the batch's MULTI so the WATCH still guards it. `M n k1 v1 …` is one
MSET of n keys, `Z key n s1 m1 …` one ZADD of n members: a batch's states, snapshots and due times
are a few commands for Redis to run, not one per customer."""

MAX_PAIRS = 500
"""Keys per MSET and members per ZADD in one op: far below what Lua's `unpack` can spread."""


class Ops:
    """Writes collected for `APPLY_OPS`, with the method names of a Redis pipeline the index code calls."""

    def __init__(self) -> None:
        self.args: list[bytes | str | int] = []

    def mset(self, pairs: list[tuple[str, bytes | str]]) -> None:
        for i in range(0, len(pairs), MAX_PAIRS):
            chunk = pairs[i:i + MAX_PAIRS]
            self.args += ["M", len(chunk)]
            for key, value in chunk:
                self.args += [key, value]

    def delete(self, *keys: str) -> None:
        for key in keys:
            self.args += ["D", key]

    def zadd(self, key: str, mapping: dict[str, int]) -> None:
        members = list(mapping.items())
        for i in range(0, len(members), MAX_PAIRS):
            chunk = members[i:i + MAX_PAIRS]
            self.args += ["Z", key, len(chunk)]
            for member, score in chunk:
                self.args += [score, member]

    def zrem(self, key: str, *members: str) -> None:
        for member in members:
            self.args += ["R", key, member]

    def hset(self, key: str, field: str, value: str) -> None:
        self.args += ["H", key, field, value]

    def hdel(self, key: str, *names: str) -> None:
        for name in names:
            self.args += ["X", key, name]


class Transaction:
    """Reads done under WATCH; `commit` writes a batch's changes atomically or raises CommitConflict."""

    def __init__(
        self,
        pipe: AnyPipeline,
        keys: RedisKeys,
        group: str,
        states: dict[str, CustomerState],
        offsets: dict[str, int],
        list_entries: dict[str, ListEntry] | None = None,
        *,
        encoder: ValueEncoder,
        cache: StateCache | None,
    ) -> None:
        self._pipe = pipe
        self._keys = keys
        self._group = group
        self.states = states
        self.offsets = offsets
        self.list_entries = list_entries or {}
        """customer_id -> the list entry written with its state (read under the same WATCH)."""
        self._encoder = encoder
        self._cache = cache

    async def commit(self, changes: Changes) -> None:
        """Every write of the batch as one script call inside MULTI/EXEC: atomic with the WATCH, and one
        command to encode and one answer to parse instead of several per customer."""
        written: dict[str, bytes] = {}
        ops = self._ops(changes, written)
        pipe = self._pipe
        try:
            pipe.multi()
            if ops.args:
                pipe.execute_command("EVAL", APPLY_OPS, 0, *ops.args)
            await pipe.execute()
            if self._cache is not None:
                self._remember(changes, written)
        except WatchError as exc:
            raise CommitConflict("customer state changed under this batch") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"committing scorer state to Redis failed: {exc}") from exc
        finally:
            await pipe.reset()

    def _remember(self, changes: Changes, written: dict[str, bytes]) -> None:
        """After a commit: the states as committed go (back) to the cache, erased customers leave it."""
        assert self._cache is not None
        for customer_id in changes.erased:
            self._cache.forget(customer_id)
        for customer_id, value in written.items():
            self._cache.put(customer_id, value.decode(), changes.states[customer_id])

    def _ops(self, changes: Changes, written: dict[str, bytes]) -> Ops:
        ops = Ops()
        for customer_id in changes.erased:
            ops.delete(*customer_keys(self._keys, customer_id).values())
        encode = self._encoder.encode
        for customer_id, state in changes.states.items():
            written[customer_id] = encode(state.to_json())
        values: list[tuple[str, bytes | str]] = [(self._keys.state(c), v) for c, v in written.items()]
        values += [(self._keys.snapshot(c), encode(snap)) for c, snap in changes.snapshots.items()]
        ops.mset(values)
        for partition, entries in changes.due.items():
            key = self._keys.due(self._group, partition)
            ops.zrem(key, *[c for c, due in entries.items() if due is None])
            ops.zadd(key, {c: due for c, due in entries.items() if due is not None})
        for customer_id, entry in changes.lists.items():
            queue_index_change(ops, self._keys, customer_id, self.list_entries.get(customer_id), entry)
        offsets = self._keys.offsets(self._group)
        for tp, offset in changes.offsets.items():
            ops.hset(offsets, tp, str(offset))
        return ops

    async def abort(self) -> None:
        await self._pipe.reset()
