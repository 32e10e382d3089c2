"""The lists reps work from — throttled, cooling_off, to_activate — as a Redis index, and its reader.

The scorer writes the index in the same script call as the customers' states (scorer/partition_store.py,
`queue_index_change`), so a list is exact whenever the states are, also after a kill -9. Like the
states, the index is kept per Kafka partition, under the partition's hash tag (services/names.py
`PartitionKeys`):

    {p<N>}:list:<name>                  sorted set customer_id -> score, ascending = most urgent first
    {p<N>}:list:<name>:rep:<id>         the same, the customers whose owner rep is <id>
    {p<N>}:list:<name>:tier:<t>, …:stage:<s>     the same by tier and by stage
    {p<N>}:list:entries                 hash customer_id -> the entry last written (what to remove next time)

Scores: to_activate by when the customer became overdue (the longest overdue first); cooling_off
and throttled by minus when they entered (the most recent first). Equal scores are ordered by
customer id (bytes), as Redis orders them.

The API (`GET /v1/customers?list=…`) and `fatigue customers list` read through `ListReader`, which
merges the partitions' indexes in that one order: cursor pages that stay stable while the lists
change — a cursor is a position (score, customer id) in that order, not an offset, so customers
joining or leaving before it shift nothing, whichever partition they are in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.names import CUSTOMER_LISTS, LIST_COOLING_OFF, LIST_THROTTLED, PartitionKeys, RedisKeys
from services.policy.decision import ALLOW, decide
from services.policy.model import Policy
from services.redisio import RedisClient

MAX_SCANNED_PER_PAGE = 2000
"""With a tier/stage filter beyond the one index used, at most this many entries are looked at per
page: a page may then hold fewer items than asked while `next_cursor` goes on."""

_AFTER = """
local key, score, member, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local current = redis.call('ZSCORE', key, member)
if current and tonumber(current) == tonumber(score) then
  local rank = redis.call('ZRANK', key, member)
  return {1, redis.call('ZRANGE', key, rank + 1, rank + count, 'WITHSCORES')}
end
return {0, redis.call('ZRANGE', key, score, score, 'BYSCORE', 'WITHSCORES'),
        redis.call('ZRANGE', key, '(' .. score, '+inf', 'BYSCORE', 'LIMIT', 0, count, 'WITHSCORES')}
"""
"""The `count` members after (score, member). While the cursor's customer is still there with that
score: by rank, atomically. Otherwise (it moved): its score's whole tie group — the members after
it by id are picked in Python, in Redis's byte order — then those with a greater score."""


class InvalidCursor(ValueError):
    """A cursor that is not one this reader gave out for this list."""


@dataclass(frozen=True)
class ListEntry:
    """Where one customer is in the index."""

    name: str
    """The list: throttled | cooling_off | to_activate."""
    score: int
    rep: str | None = None
    tier: str | None = None
    stage: str | None = None

    def keys(self, keys: ListKeys) -> list[str]:
        found = [keys.customer_list(self.name)]
        for field_name, value in (("rep", self.rep), ("tier", self.tier), ("stage", self.stage)):
            if value:
                found.append(keys.customer_list_by(self.name, field_name, value))
        return found

    def to_json(self) -> str:
        return json.dumps([self.name, self.score, self.rep, self.tier, self.stage], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ListEntry:
        name, score, rep, tier, stage = json.loads(text)
        return cls(name, int(score), rep, tier, stage)

    def matches(self, name: str, rep: str | None, tier: str | None, stage: str | None) -> bool:
        return self.name == name and all(want is None or want == have for want, have in (
            (rep, self.rep), (tier, self.tier), (stage, self.stage)))


class ListKeys(Protocol):
    """Where a partition's lists are (services/names.py `PartitionKeys`)."""

    def customer_list(self, name: str) -> str: ...
    def customer_list_by(self, name: str, field: str, value: str) -> str: ...
    def customer_list_entries(self) -> str: ...


class IndexWriter(Protocol):
    """Where index changes are queued: a MULTI pipeline, or the scorer's batch of writes."""

    def zadd(self, key: str, mapping: dict[str, int], /) -> Any: ...
    def zrem(self, key: str, /, *members: str) -> Any: ...
    def hset(self, key: str, field: str, value: str, /) -> Any: ...
    def hdel(self, key: str, /, *fields: str) -> Any: ...


def queue_index_change(pipe: IndexWriter, keys: ListKeys, customer_id: str, old: ListEntry | None,
                       new: ListEntry | None) -> None:
    """Queue what moves a customer from `old` to `new` (None: on no list) in its partition's index."""
    if old == new:
        return
    if old is not None:
        for key in old.keys(keys):
            pipe.zrem(key, customer_id)
    if new is None:
        pipe.hdel(keys.customer_list_entries(), customer_id)
        return
    for key in new.keys(keys):
        pipe.zadd(key, {customer_id: new.score})
    pipe.hset(keys.customer_list_entries(), customer_id, new.to_json())


def encode_cursor(name: str, score: int, customer_id: str) -> str:
    raw = json.dumps([name, score, customer_id], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _three(value: Any) -> tuple[Any, Any, Any]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("a cursor holds three values")
    return value[0], value[1], value[2]


def decode_cursor(text: str, name: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        listed, score, customer_id = _three(json.loads(raw))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise InvalidCursor("not a cursor this API gave out; start again without one") from exc
    if listed != name or not isinstance(score, int) or not isinstance(customer_id, str):
        raise InvalidCursor(f"not a cursor of the {name} list; start again without one")
    return score, customer_id


@dataclass
class ListPage:
    members: list[tuple[str, int, int]] = field(default_factory=list)
    """(customer_id, score, partition), most urgent first."""
    next_cursor: str | None = None


def _order(member: str, score: int) -> tuple[int, bytes]:
    return score, member.encode()


class ListReader:
    def __init__(self, redis: RedisClient, keys: RedisKeys, partitions: int) -> None:
        self._redis = redis
        self._keys = keys
        self._partitions = partitions
        self._after_script = redis.register_script(_AFTER)

    async def page(self, name: str, *, owner_rep_id: str | None = None, tier: str | None = None,
                   stage: str | None = None, limit: int = 50, cursor: str | None = None) -> ListPage:
        """Up to `limit` customers of the list after `cursor`, over every partition. InvalidCursor;
        RedisError when Redis fails."""
        if name not in CUSTOMER_LISTS:
            raise ValueError(f"unknown list {name!r}")
        position = decode_cursor(cursor, name) if cursor else None
        found: list[tuple[str, int, int]] = []
        scanned, exhausted = 0, False
        while len(found) < limit and scanned < MAX_SCANNED_PER_PAGE:
            ask = max(limit - len(found), 50)
            batch, complete = await self._next(name, owner_rep_id, tier, stage, position, ask)
            entries = await self._entries(batch)
            consumed = 0
            for member, score, partition in batch:
                scanned, consumed, position = scanned + 1, consumed + 1, (score, member)
                entry = entries.get(member)
                if entry is not None and entry.matches(name, owner_rep_id, tier, stage):
                    found.append((member, score, partition))
                    if len(found) == limit:
                        break
            if complete and consumed == len(batch):
                exhausted = True  # nothing after the last one looked at, in any partition
                break
        next_cursor = None if exhausted or position is None else encode_cursor(name, position[0], position[1])
        return ListPage(found, next_cursor)

    async def _next(self, name: str, rep: str | None, tier: str | None, stage: str | None,
                    position: tuple[int, str] | None, count: int) -> tuple[list[tuple[str, int, int]], bool]:
        """The `count` members after `position` in the merged order, and whether that is all there is."""
        answers = await asyncio.gather(*(
            self._after(self._index(self._keys.partition(p), name, rep, tier, stage), position, count)
            for p in range(self._partitions)))
        runs = [[(member, score, p) for member, score in found] for p, found in enumerate(answers)]
        merged = list(heapq.merge(*runs, key=lambda item: _order(item[0], item[1])))
        return merged[:count], all(len(found) < count for found in answers) and len(merged) <= count

    async def _entries(self, members: list[tuple[str, int, int]]) -> dict[str, ListEntry]:
        by_partition: dict[int, list[str]] = {}
        for member, _, partition in members:
            by_partition.setdefault(partition, []).append(member)
        answers = await asyncio.gather(*(self._redis.hmget(self._keys.partition(p).customer_list_entries(), ids)
                                          for p, ids in by_partition.items()))
        entries = {}
        for ids, raws in zip(by_partition.values(), answers, strict=True):
            for member, raw in zip(ids, raws, strict=True):
                if raw:
                    entries[member] = ListEntry.from_json(raw)
        return entries

    @staticmethod
    def _index(keys: PartitionKeys, name: str, rep: str | None, tier: str | None, stage: str | None) -> str:
        """The most selective index the filters allow (the others are checked on the entries)."""
        for field_name, value in (("rep", rep), ("stage", stage), ("tier", tier)):
            if value:
                return keys.customer_list_by(name, field_name, value)
        return keys.customer_list(name)

    async def _after(self, key: str, position: tuple[int, str] | None, count: int) -> list[tuple[str, int]]:
        if position is None:
            rows: list[Any] = await self._redis.zrange(key, "-inf", "+inf", byscore=True, offset=0, num=count,
                                                       withscores=True)
            return [(str(row[0]), int(row[1])) for row in rows]
        score, member = position
        answer = await self._after_script(keys=[key], args=[str(score), member, str(count)])
        if int(answer[0]) == 1:
            return _pairs(answer[1])
        ties = [(m, s) for m, s in _pairs(answer[1]) if m.encode() > member.encode()]
        return (ties + _pairs(answer[2]))[:count]


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(str(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]


def list_item(customer_id: str, snapshot: dict[str, Any], policy: Policy, now_ms: int) -> dict[str, Any]:
    """One line of a list as the API answers it: who, why, since when, what next and when.

    `next_allowed_ms`: when the suggested next step (the best open channel) is allowed by the
    pre-send decision — `now_ms` when it is allowed now; without a known channel, the lifecycle's
    end (throttled, cooling off) or now (to activate); None when it ends only on a response.
    """
    lifecycle = snapshot.get("lifecycle") or {}
    profile = snapshot.get("profile") or {}
    step = lifecycle.get("next_step") or {}
    channel = step.get("channel")
    if channel:
        decision = decide(snapshot, policy, channel, None, now_ms)
        next_allowed = now_ms if decision.decision == ALLOW else decision.next_allowed_ms
    elif lifecycle.get("list") in (LIST_THROTTLED, LIST_COOLING_OFF):
        next_allowed = decide(snapshot, policy, "other", None, now_ms).next_allowed_ms
    else:
        next_allowed = now_ms
    return {
        "customer_id": customer_id,
        "list": lifecycle.get("list"),
        "status": snapshot.get("status"),
        "state": lifecycle.get("state"),
        "since": lifecycle.get("since"),
        "overdue_since": lifecycle.get("overdue_since"),
        "until": lifecycle.get("until"),
        "reasons": lifecycle.get("reasons", []),
        "next_step": {"channel": channel, "best_time": step.get("best_time")},
        "next_allowed_ms": next_allowed,
        "suggestion": (snapshot.get("last_action") or {}).get("suggestion"),
        "owner_rep_id": profile.get("owner_rep_id"),
        "tier": profile.get("tier"),
        "stage": profile.get("stage"),
    }
