"""The list index and its cursor pages on a real Redis: order, ties, filters, and pages that stay
stable while the lists change under them."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from services.customer_lists import InvalidCursor, ListEntry, ListReader, encode_cursor, queue_index_change
from services.names import RedisKeys
from services.partitions import partition_of

pytestmark = pytest.mark.integration


PARTITIONS = 4
"""Customers spread over four partitions: every page merges four indexes."""


async def write(redis: Redis, keys: RedisKeys, moves: list[tuple[str, ListEntry | None]],
                known: dict[str, ListEntry]) -> None:
    """Move customers as the scorer does: in their partition's index, one MULTI/EXEC per partition,
    from the entry known to the new one."""
    by_partition: dict[int, list[tuple[str, ListEntry | None]]] = {}
    for customer, entry in moves:
        by_partition.setdefault(partition_of(customer, PARTITIONS), []).append((customer, entry))
    for partition, run in by_partition.items():
        pipe = redis.pipeline(transaction=True)
        for customer, entry in run:
            queue_index_change(pipe, keys.partition(partition), customer, known.get(customer), entry)
            if entry is None:
                known.pop(customer, None)
            else:
                known[customer] = entry
        await pipe.execute()


def reader_of(redis: Redis, keys: RedisKeys) -> ListReader:
    return ListReader(redis, keys, PARTITIONS)


async def read_all(reader: ListReader, name: str, limit: int, **filters: str) -> list[str]:
    seen, cursor = [], None
    for _ in range(1000):
        page = await reader.page(name, limit=limit, cursor=cursor, **filters)
        seen += [c for c, _, _ in page.members]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the pages never end")


@pytest.fixture
def keys(unique: str) -> RedisKeys:
    return RedisKeys(f"t{unique}:")


async def test_pages_go_through_the_list_in_order_with_ties_by_id(redis_client: Redis, keys: RedisKeys) -> None:
    known: dict[str, ListEntry] = {}
    rng = random.Random(1)
    entries = [(f"c{i:03d}", ListEntry("to_activate", rng.choice((10, 20, 20, 20, 30)), f"rep{i % 3}"))
               for i in range(120)]
    await write(redis_client, keys, entries, known)  # type: ignore[arg-type]
    expected = [c for c, e in sorted(entries, key=lambda ce: (ce[1].score, ce[0]))]
    reader = reader_of(redis_client, keys)
    for limit in (1, 7, 50, 500):
        assert await read_all(reader, "to_activate", limit) == expected
    assert await read_all(reader, "to_activate", 5, owner_rep_id="rep1") == [
        c for c in expected if known[c].rep == "rep1"]
    assert await read_all(reader, "cooling_off", 5) == []


async def test_filters_combine_and_entries_move_between_lists(redis_client: Redis, keys: RedisKeys) -> None:
    known: dict[str, ListEntry] = {}
    await write(redis_client, keys, [
        ("a", ListEntry("throttled", -5, "alice", "A", "prospect")),
        ("b", ListEntry("throttled", -4, "alice", "B", "prospect")),
        ("c", ListEntry("throttled", -3, "bo", "A", "customer")),
    ], known)
    reader = reader_of(redis_client, keys)
    assert await read_all(reader, "throttled", 10, owner_rep_id="alice", tier="A") == ["a"]
    assert await read_all(reader, "throttled", 10, tier="A") == ["a", "c"]
    assert await read_all(reader, "throttled", 10, stage="prospect", tier="B") == ["b"]
    await write(redis_client, keys, [("a", ListEntry("to_activate", 7, "bo", "A", "prospect")), ("b", None)], known)
    assert await read_all(reader, "throttled", 10) == ["c"]
    assert await read_all(reader, "to_activate", 10, owner_rep_id="bo") == ["a"]
    alice = [keys.partition(p).customer_list_by("throttled", "rep", "alice") for p in range(PARTITIONS)]
    assert [await redis_client.zcard(key) for key in alice] == [0] * PARTITIONS
    assert await redis_client.hget(keys.partition(partition_of("b", PARTITIONS)).customer_list_entries(), "b") is None


@pytest.mark.parametrize("seed", range(12))
async def test_pages_stay_stable_while_the_list_changes(redis_client: Redis, keys: RedisKeys, seed: int) -> None:
    """Between pages customers join, leave and move (the scorer at work). A customer that stays put
    the whole time is listed exactly once and in order; nobody is listed twice unless it moved."""
    rng = random.Random(seed)
    known: dict[str, ListEntry] = {}
    scores = (1, 2, 2, 2, 3, 4)
    await write(redis_client, keys, [(f"c{i:02d}", ListEntry("cooling_off", rng.choice(scores)))
                                     for i in range(60)], known)
    reader = reader_of(redis_client, keys)
    changed: set[str] = set()
    seen: list[tuple[str, int]] = []
    cursor, fresh = None, 100
    for _ in range(200):
        page = await reader.page("cooling_off", limit=rng.choice((3, 5, 8)), cursor=cursor)
        seen += [(c, s) for c, s, _ in page.members]
        cursor = page.next_cursor
        if cursor is None:
            break
        moves: list[tuple[str, ListEntry | None]] = []
        for customer in rng.sample(sorted(known), k=min(4, len(known))):
            if rng.random() < 0.5:
                moves.append((customer, None))
            else:
                moves.append((customer, ListEntry("cooling_off", rng.choice(scores))))
            changed.add(customer)
        for _ in range(rng.randrange(3)):
            moves.append((f"n{fresh}", ListEntry("cooling_off", rng.choice(scores))))
            changed.add(f"n{fresh}")
            fresh += 1
        await write(redis_client, keys, moves, known)
    else:
        raise AssertionError("the pages never end")
    steady = [(c, s) for c, s in seen if c not in changed]
    assert steady == sorted(steady, key=lambda cs: (cs[1], cs[0]))
    untouched = {c for c in known if c not in changed}
    assert sorted(c for c, _ in steady) == sorted(untouched)
    ids = [c for c, _ in seen]
    assert all(ids.count(c) == 1 for c in ids if c not in changed)


async def test_a_cursor_whose_customer_left_continues_after_it(redis_client: Redis, keys: RedisKeys) -> None:
    known: dict[str, ListEntry] = {}
    await write(redis_client, keys, [(f"c{i}", ListEntry("to_activate", 5)) for i in range(6)], known)
    reader = reader_of(redis_client, keys)
    first = await reader.page("to_activate", limit=3)
    assert [c for c, _, _ in first.members] == ["c0", "c1", "c2"]
    await write(redis_client, keys, [("c2", None), ("c1", ListEntry("to_activate", 9))], known)
    rest = await reader.page("to_activate", limit=10, cursor=first.next_cursor)
    assert [c for c, _, _ in rest.members] == ["c3", "c4", "c5", "c1"] and rest.next_cursor is None


@pytest.mark.parametrize("cursor", ["nonsense!", encode_cursor("throttled", 1, "x"), "WzEsMl0"])
async def test_foreign_cursors_are_refused(redis_client: Redis, keys: RedisKeys, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await reader_of(redis_client, keys).page("to_activate", cursor=cursor)
