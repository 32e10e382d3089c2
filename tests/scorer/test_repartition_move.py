"""Moving customers to their partition under a new count (scorer/repartition_move.py), on one Redis and on a
Redis Cluster: exactly the customers whose partition changes move, with their state, decision view, list
entry and memberships and due time; what the API's readers answer is the same before and after; an
interrupted move, run again, ends in the state of one run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scorer.partition_store import PartitionChanges, RedisPartitionStore
from scorer.repartition_move import Found, Mover
from services.customer_lists import ListReader
from services.errors import StoreUnavailable
from services.names import CUSTOMER_LISTS, RedisKeys
from services.partitions import partition_of
from services.policy.decision import decide
from services.policy.model import default_policy
from services.redisio import RedisClient
from services.snapshots import CustomerReader
from tests.conftest import RedisTarget
from tests.helpers import keys_matching
from tests.scorer_feed import ScorerFeed

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, tzinfo=UTC)
OLD, NEW = 3, 6
STAGES = ("prospect", "intent", "customer")


async def populate(client: RedisClient, keys: RedisKeys, customers: int = 240) -> list[str]:
    """`customers` customers on 3 partitions, as the real scorer writes them: throttled, cooling off, to
    activate after a timer, or normal with a timer pending; profiles with reps, tiers and stages."""
    feed = ScorerFeed(client, keys, OLD, NOW)
    ids = [f"cust-{i}" for i in range(customers)]
    records = []
    for i, c in enumerate(ids):
        records.append(feed.profile(c, owner_rep_id=f"rep{i % 5}", tier="AB"[i % 2], stage=STAGES[i % 3]))
        shape = i % 4
        if shape == 0:  # 13 answered touches in 6 days: the frequency cap
            for t in range(13):
                records += [feed.event(c, 6 - t * 0.4), feed.event(c, 6 - t * 0.4 - 0.01, "response", "reply")]
        elif shape == 1:  # 5 unanswered touches: cooling off
            records += [feed.event(c, 3 - t * 0.5) for t in range(5)]
        elif shape == 2:  # last touched 40 days ago: overdue, on to_activate once its timer fires
            records += [feed.event(c, 40), feed.event(c, 39.99, "response", "reply")]
        else:  # touched yesterday, answered: normal, a timer pending
            records += [feed.event(c, 1), feed.event(c, 0.99, "response", "reply")]
    await feed.process(records)
    await feed.fire_due()
    return ids


async def read_all(client: RedisClient, keys: RedisKeys, partitions: int, ids: list[str]) -> dict[str, Any]:
    """Everything the API's readers answer about these customers with `partitions`."""
    customers = CustomerReader(client, keys, partitions)
    lists = ListReader(client, keys, partitions)
    pages = {}
    for name in CUSTOMER_LISTS:
        for rep in (None, "rep1"):
            page = await lists.page(name, owner_rep_id=rep, limit=500)
            pages[(name, rep)] = [(c, score) for c, score, _ in page.members]
    views = {c: (await customers.view_with_policy_stamp(c))[0] for c in ids}
    now_ms = int(NOW.timestamp() * 1000)
    return {
        "states": await customers.states([(c, partition_of(c, partitions)) for c in ids]),
        "lists": pages,
        "views": views,
        "decisions": {c: decide(v, default_policy(), "email", None, now_ms).decision for c, v in views.items()},
        "due": {c: await client.zscore(keys.partition(partition_of(c, partitions)).due(), c) for c in ids},
    }


async def dump(client: RedisClient, keys: RedisKeys) -> dict[str, Any]:
    """Every key under the prefix and its content (the claim counters aside), prefix removed."""
    found: dict[str, Any] = {}
    for key in await keys_matching(client, f"{keys.prefix}*"):
        if key.endswith(":epoch"):
            continue
        kind = await client.type(key)
        if kind == "hash":
            value: Any = await client.hgetall(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = await client.get(key)
        found[key[len(keys.prefix):]] = value
    return found


async def test_exactly_the_customers_whose_partition_changes_move_and_every_read_answers_the_same(
        redis_target: RedisTarget) -> None:
    client, keys = redis_target.client, redis_target.keys
    ids = await populate(client, keys)
    before = await read_all(client, keys, OLD, ids)
    assert all(before["lists"][(name, None)] for name in CUSTOMER_LISTS), "every list has customers to move"
    offsets_before = {p: await client.hgetall(keys.partition(p).offsets()) for p in range(NEW)}

    moved = await Mover(client, keys, OLD, NEW, batch=50).run()

    movers = {c for c in ids if partition_of(c, NEW) != partition_of(c, OLD)}
    assert 0 < len(movers) < len(ids) and sum(moved.values()) == len(movers)
    assert moved == {p: sum(1 for c in movers if partition_of(c, OLD) == p) for p in range(OLD)}
    assert await read_all(client, keys, NEW, ids) == before
    for p in range(NEW):  # each customer's keys in its new partition only
        partition, mine = keys.partition(p), {c for c in ids if partition_of(c, NEW) == p}
        for key in (partition.states(), partition.views()):
            assert set(await client.hkeys(key)) == mine, key
        assert set(await client.hkeys(partition.customer_list_entries())) <= mine
        assert set(await client.zrange(partition.due(), 0, -1)) <= mine
    offsets_after = {p: await client.hgetall(keys.partition(p).offsets()) for p in range(NEW)}
    assert offsets_after == offsets_before  # old partitions keep theirs, the new ones have none
    assert all(offsets_after[p] for p in range(OLD)) and not any(offsets_after[p] for p in range(OLD, NEW))


class DiesAfterCopying(Mover):
    """The command killed between copying a batch into the new partitions and deleting it from the old one."""

    deletes_left = 2

    async def _delete(self, partition: int, found: list[Found]) -> None:
        if self.deletes_left == 0:
            raise StoreUnavailable("Redis went away (injected) after the copy, before the delete")
        self.deletes_left -= 1
        await super()._delete(partition, found)


async def test_an_interrupted_move_run_again_ends_as_one_run(redis_target: RedisTarget) -> None:
    client, keys = redis_target.client, redis_target.keys
    once = RedisKeys(f"{keys.prefix}once:", cluster=keys.cluster)
    ids = await populate(client, keys, customers=120)
    await populate(client, once, customers=120)
    await Mover(client, once, OLD, NEW, batch=10).run()

    with pytest.raises(StoreUnavailable):
        await DiesAfterCopying(client, keys, OLD, NEW, batch=10).run()
    in_both = [c for c in ids if await client.hexists(keys.partition(partition_of(c, OLD)).states(), c)
               and await client.hexists(keys.partition(partition_of(c, NEW)).states(), c)
               and partition_of(c, OLD) != partition_of(c, NEW)]
    assert in_both, "the failure left customers in both partitions"
    await Mover(client, keys, OLD, NEW, batch=10).run()  # run again: takes up where it stopped

    def without_epochs_and_prefix(found: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in found.items() if not k.startswith("once:")}

    assert without_epochs_and_prefix(await dump(client, keys)) == await dump(client, once)
    assert await read_all(client, keys, NEW, ids) == await read_all(client, once, NEW, ids)


async def test_a_customer_with_an_unreadable_list_entry_moves_whole(redis_target: RedisTarget) -> None:
    """A list entry that does not parse (hand-written) moves as it is; the scorer rewrites it at the
    customer's next commit, as it does in place."""
    client, keys = redis_target.client, redis_target.keys
    customer = next(f"u{n}" for n in range(100) if partition_of(f"u{n}", OLD) != partition_of(f"u{n}", NEW))
    old, new = partition_of(customer, OLD), partition_of(customer, NEW)
    store = RedisPartitionStore(client, keys)
    epoch = (await store.claim(old)).epoch
    await store.commit(old, epoch, PartitionChanges(states={customer: b"{}"}, due={customer: 5}))
    await client.hset(keys.partition(old).customer_list_entries(), customer, "not json")
    assert await Mover(client, keys, OLD, NEW).run() == {old: 1, **{p: 0 for p in range(OLD) if p != old}}
    assert await client.hget(keys.partition(new).customer_list_entries(), customer) == "not json"
    assert await client.hget(keys.partition(new).states(), customer) == "{}"
    assert await client.zscore(keys.partition(new).due(), customer) == 5
    assert await client.hlen(keys.partition(old).customer_list_entries()) == 0
