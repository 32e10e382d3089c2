"""DeliveryStore against a real redis-server and a real Redis Cluster (every test runs on both):
scheduling, claiming with leases, transitions, listing, dead-letter expiry, the per-subscription
dead-letter index and replay, digested deliveries. On a Cluster the deliveries spread over shards
(services/names.py), so the order of one claim's records is no promise: those assertions sort."""

from __future__ import annotations

import pytest

from services.delivery.store import STATUSES, DeliveryRecord, DeliveryStore
from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import RedisClient
from tests.conftest import RedisTarget
from tests.notifier.helpers import make_action
from tests.redis_cluster import RedisClusterProcesses

pytestmark = pytest.mark.integration

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)


class Clock:
    def __init__(self) -> None:
        self.now_s = NOW_S

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def keys(redis_target: RedisTarget) -> RedisKeys:
    return redis_target.keys


@pytest.fixture
def store(redis_client: RedisClient, keys: RedisKeys, clock: Clock) -> DeliveryStore:
    return DeliveryStore(redis_client, keys, delivered_ttl_s=60, dead_letter_ttl_s=120, clock=clock)


def record(delivery_id: str, due_ms: int = NOW_MS, sub_id: str = "sub_a") -> DeliveryRecord:
    return DeliveryRecord.new(delivery_id, make_action(), sub_id, due_ms)


async def test_schedule_is_idempotent_and_keeps_the_first_record(store: DeliveryStore) -> None:
    first = record("msg_1")
    assert await store.schedule([first, record("msg_2")]) == ["msg_1", "msg_2"]
    assert await store.schedule([record("msg_1"), record("msg_3")]) == ["msg_3"]
    assert await store.get("msg_1") == first
    assert await store.count("pending") == 3
    assert await store.schedule([]) == []


async def test_claim_takes_only_due_records_and_the_lease_hides_them(store: DeliveryStore) -> None:
    await store.schedule([record("msg_now"), record("msg_later", due_ms=NOW_MS + 10_000)])
    claimed = await store.claim_due(NOW_MS, lease_ms=5_000, limit=10)
    assert [r.id for r in claimed] == ["msg_now"]
    assert await store.claim_due(NOW_MS + 4_999, lease_ms=5_000, limit=10) == []
    # the claimer died: its lease expires and the delivery is due again
    assert [r.id for r in await store.claim_due(NOW_MS + 5_000, lease_ms=5_000, limit=10)] == ["msg_now"]
    first = [r.id for r in await store.claim_due(NOW_MS + 20_000, lease_ms=5_000, limit=1)]
    assert first in (["msg_now"], ["msg_later"])
    assert len(await store.claim_due(NOW_MS + 20_000, lease_ms=5_000, limit=10)) == 1  # the other one


async def test_reschedule_records_the_attempt_and_moves_the_due_time(store: DeliveryStore) -> None:
    await store.schedule([record("msg_1")])
    await store.claim_due(NOW_MS, lease_ms=60_000, limit=10)
    rec = await store.reschedule("msg_1", next_ms=NOW_MS + 5_000, attempts=1, last_status=500, last_error="HTTP 500")
    assert rec is not None and rec.attempts == 1 and rec.last_status == 500
    assert await store.claim_due(NOW_MS + 4_999, lease_ms=60_000, limit=10) == []
    [again] = await store.claim_due(NOW_MS + 5_000, lease_ms=60_000, limit=10)
    assert (again.attempts, again.last_error, again.status) == (1, "HTTP 500", "pending")


async def test_delivered_leaves_the_queue_and_expires(store: DeliveryStore, redis_client: RedisClient,
                                                      keys: RedisKeys) -> None:
    await store.schedule([record("msg_1")])
    rec = await store.mark_delivered("msg_1", attempts=1, last_status=200)
    assert rec is not None and rec.status == "delivered"
    assert await store.claim_due(NOW_MS + 10**9, lease_ms=1, limit=10) == []
    assert [r.id for r in await store.list("delivered")] == ["msg_1"]
    assert 0 < await redis_client.ttl(keys.delivery("msg_1")) <= 60
    assert await store.mark_failed("msg_1", attempts=2, last_status=500, last_error="x") is None  # not pending


async def test_failed_goes_to_the_dead_letter_set_and_retry_brings_it_back(
    store: DeliveryStore, clock: Clock
) -> None:
    await store.schedule([record("msg_1"), record("msg_2")])
    await store.mark_failed("msg_1", attempts=7, last_status=503, last_error="HTTP 503")
    clock.now_s += 1
    await store.mark_failed("msg_2", attempts=1, last_status=400, last_error="HTTP 400")
    assert [r.id for r in await store.list("failed")] == ["msg_2", "msg_1"]  # most recent first
    assert [r.id for r in await store.list("failed", limit=1, offset=1)] == ["msg_1"]
    assert await store.count("failed") == 2 and await store.count("pending") == 0

    retried = await store.retry("msg_1")
    assert retried is not None and (retried.status, retried.attempts) == ("pending", 0)
    assert [r.id for r in await store.list("failed")] == ["msg_2"]
    assert [r.id for r in await store.claim_due(store.now_ms(), lease_ms=1000, limit=10)] == ["msg_1"]
    with pytest.raises(ValueError, match="pending"):
        await store.retry("msg_1")
    assert await store.retry("msg_unknown") is None


async def test_list_pending_soonest_first(store: DeliveryStore) -> None:
    await store.schedule([record("msg_b", due_ms=NOW_MS + 2), record("msg_a", due_ms=NOW_MS + 1)])
    assert [r.id for r in await store.list("pending")] == ["msg_a", "msg_b"]
    assert await store.get("msg_none") is None


async def test_rate_slots_count_per_clock_minute(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = DeliveryStore(redis_client, keys)
    minute_ms = 1_790_000_040_000 - 1_790_000_040_000 % 60_000
    waits = [await store.take_rate_slot("sub_r", 2, minute_ms + 1_000 * i) for i in range(3)]
    assert waits == [0, 0, 60_000 - 2_000]  # the third send waits for the next minute
    assert await store.take_rate_slot("sub_r", 2, minute_ms + 60_000) == 0  # a new minute, a new window
    assert await store.take_rate_slot("sub_other", 2, minute_ms + 5_000) == 0  # per subscription


async def fail(store: DeliveryStore, *ids: str) -> None:
    for delivery_id in ids:
        assert await store.mark_failed(delivery_id, attempts=3, last_status=500, last_error="HTTP 500") is not None


async def test_dead_letters_expire_and_a_retry_keeps_them_for_good(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys, clock: Clock
) -> None:
    await store.schedule([record("msg_old"), record("msg_new")])
    await fail(store, "msg_old")
    assert 0 < await redis_client.ttl(keys.delivery("msg_old")) <= 120
    by_sub_old = keys.deliveries_failed_by_subscription("sub_a", keys.delivery_shard("msg_old"))
    assert 0 < await redis_client.ttl(by_sub_old) <= 120

    clock.now_s += 121  # past msg_old's dead-letter TTL
    await fail(store, "msg_new")
    # the sets are trimmed by score (msg_old failed more than the TTL ago), counting trims them too
    assert await store.count("failed") == 1
    for shard in range(keys.delivery_shards):
        assert await redis_client.zrange(keys.deliveries_failed(shard), 0, -1) == (
            ["msg_new"] if shard == keys.delivery_shard("msg_new") else [])
    by_sub = keys.deliveries_failed_by_subscription("sub_a", keys.delivery_shard("msg_new"))
    assert "msg_old" not in await redis_client.zrange(by_sub, 0, -1)

    retried = await store.retry("msg_new")
    assert retried is not None and retried.status == "pending"
    assert await redis_client.ttl(keys.delivery("msg_new")) == -1  # pending again: no expiry
    assert await redis_client.zcard(by_sub) == 0


async def test_readers_drop_expired_dead_letters(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys
) -> None:
    await store.schedule([record("msg_1"), record("msg_2")])
    await fail(store, "msg_1", "msg_2")
    await redis_client.delete(keys.delivery("msg_1"))  # as its TTL would
    assert [r.id for r in await store.list("failed", subscription_id="sub_a")] == ["msg_2"]
    assert await redis_client.zrange(keys.deliveries_failed_by_subscription("sub_a", keys.delivery_shard("msg_2")),
                                     0, -1) == ["msg_2"]
    by_sub_1 = keys.deliveries_failed_by_subscription("sub_a", keys.delivery_shard("msg_1"))
    assert "msg_1" not in await redis_client.zrange(by_sub_1, 0, -1)
    assert [r.id for r in await store.list("failed")] == ["msg_2"]
    assert await store.count("failed") == 1


async def test_the_per_subscription_index_follows_failures_and_retries(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys, clock: Clock
) -> None:
    await store.schedule([record("msg_a1"), record("msg_a2"), record("msg_b1", sub_id="sub_b")])
    await fail(store, "msg_a1")
    clock.now_s += 1
    await fail(store, "msg_b1", "msg_a2")
    assert [r.id for r in await store.list("failed", subscription_id="sub_a")] == ["msg_a2", "msg_a1"]
    assert [r.id for r in await store.list("failed", subscription_id="sub_b")] == ["msg_b1"]
    assert [r.id for r in await store.list("failed", subscription_id="sub_a", limit=1, offset=1)] == ["msg_a1"]
    assert await store.list("failed", subscription_id="sub_none") == []
    shard = keys.delivery_shard("msg_a1")
    assert await redis_client.zscore(keys.deliveries_failed_by_subscription("sub_a", shard), "msg_a1") == NOW_MS

    await store.retry("msg_a2")
    assert [r.id for r in await store.list("failed", subscription_id="sub_a")] == ["msg_a1"]
    assert [r.id for r in await store.list("failed")] == ["msg_b1", "msg_a1"]
    # failing again after the retry puts it back in both, with the new time
    await fail(store, "msg_a2")
    assert [r.id for r in await store.list("failed", subscription_id="sub_a")] == ["msg_a2", "msg_a1"]

    for status in ("pending", "delivered", "digested"):
        with pytest.raises(ValueError, match="only with status failed"):
            await store.list(status, subscription_id="sub_a")  # type: ignore[arg-type]


async def test_replay_moves_one_subscriptions_dead_letters_back_to_pending(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys, clock: Clock
) -> None:
    await store.schedule([record(f"msg_a{i}") for i in range(3)] + [record("msg_b", sub_id="sub_b")])
    await fail(store, "msg_a0", "msg_b")
    clock.now_s += 10
    await fail(store, "msg_a1", "msg_a2")
    clock.now_s += 5

    # since: only those dead-lettered at or after it
    assert await store.replay_failed("sub_a", since_ms=NOW_MS + 10_000) == 2
    for delivery_id in ("msg_a1", "msg_a2"):
        rec = await store.get(delivery_id)
        assert rec is not None
        assert (rec.status, rec.attempts, rec.next_attempt_at_ms) == ("pending", 0, store.now_ms())
        assert (rec.last_status, rec.last_error) == (500, "HTTP 500")  # kept, as retry does
        assert await redis_client.ttl(keys.delivery(delivery_id)) == -1
    assert [r.id for r in await store.list("failed", subscription_id="sub_a")] == ["msg_a0"]
    assert sorted(r.id for r in await store.claim_due(store.now_ms(), lease_ms=1000, limit=10)) == ["msg_a1", "msg_a2"]

    assert await store.replay_failed("sub_a") == 1  # the rest, nothing of sub_b
    assert await store.list("failed", subscription_id="sub_a") == []
    assert [r.id for r in await store.list("failed")] == ["msg_b"]
    assert await store.count("failed") == 1
    assert await store.replay_failed("sub_a") == 0
    assert await store.replay_failed("sub_none") == 0


async def test_replay_honours_the_limit(store: DeliveryStore, clock: Clock) -> None:
    await store.schedule([record(f"msg_{i}") for i in range(5)])
    for i in range(5):
        await fail(store, f"msg_{i}")
        clock.now_s += 1
    assert await store.replay_failed("sub_a", limit=2) == 2
    assert sorted(r.id for r in await store.list("failed", subscription_id="sub_a")) == ["msg_2", "msg_3", "msg_4"]
    assert await store.replay_failed("sub_a", limit=0) == 0
    assert await store.replay_failed("sub_a") == 3


async def test_replay_skips_records_that_changed_meanwhile(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.schedule([record(f"msg_{i}") for i in range(4)])
    await fail(store, "msg_0", "msg_1", "msg_2", "msg_3")
    read_ids = store._failed_ids

    async def then_changed(*args: object) -> list[str]:
        ids = await read_ids(*args)  # type: ignore[arg-type]
        await store.retry("msg_1")  # retried by hand between reading the index and replaying
        await redis_client.delete(keys.delivery("msg_2"))  # expired
        return ids

    monkeypatch.setattr(store, "_failed_ids", then_changed)
    assert await store.replay_failed("sub_a") == 2
    assert sorted(r.id for r in await store.claim_due(store.now_ms(), lease_ms=1000, limit=10)) == [
        "msg_0", "msg_1", "msg_3"]
    for shard in range(keys.delivery_shards):
        assert await redis_client.zcard(keys.deliveries_failed_by_subscription("sub_a", shard)) == 0

    async def stale(*args: object) -> list[str]:
        return ["msg_0", "msg_1"]  # both pending again by now: nothing to do

    monkeypatch.setattr(store, "_failed_ids", stale)
    assert await store.replay_failed("sub_a") == 0


async def test_replay_in_several_batches(store: DeliveryStore) -> None:
    await store.schedule([record(f"msg_{i:03}") for i in range(230)])
    await fail(store, *(f"msg_{i:03}" for i in range(230)))
    assert await store.replay_failed("sub_a") == 230
    assert await store.count("failed") == 0 and await store.count("pending") == 230


async def test_digested_leaves_the_queue_and_expires_like_delivered(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys, clock: Clock
) -> None:
    await store.schedule([record("msg_1"), record("msg_2"), record("msg_3")])
    rec = await store.mark_digested("msg_1", digest_id="msg_digest")
    assert rec is not None and (rec.status, rec.digest_id, rec.next_attempt_at_ms) == ("digested", "msg_digest", None)
    assert await store.get("msg_1") == rec
    assert 0 < await redis_client.ttl(keys.delivery("msg_1")) <= 60
    assert sorted(r.id for r in await store.claim_due(NOW_MS, lease_ms=1, limit=10)) == ["msg_2", "msg_3"]
    clock.now_s += 1
    await store.mark_digested("msg_2", digest_id="msg_digest")
    assert [r.id for r in await store.list("digested")] == ["msg_2", "msg_1"]
    assert await store.count("digested") == 2 and await store.count("pending") == 1
    assert await store.count("delivered") == 0

    clock.now_s += 60  # msg_1 and msg_2 are older than the TTL: trimmed from the set
    await store.mark_digested("msg_3", digest_id="msg_digest")
    assert await redis_client.zrange(keys.deliveries_digested(keys.delivery_shard("msg_3")), 0, -1) == ["msg_3"]
    assert [r.id for r in await store.list("digested")] == ["msg_3"]

    # only from pending
    assert await store.mark_digested("msg_1", digest_id="msg_other") is None
    assert await store.mark_delivered("msg_1", attempts=1, last_status=200) is None
    assert await store.mark_digested("msg_unknown", digest_id="msg_digest") is None
    with pytest.raises(ValueError, match="digested"):
        await store.retry("msg_1")


async def test_records_without_digest_id_still_read(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys
) -> None:
    rec = record("msg_1")
    assert "digest_id" not in rec.to_json()  # omitted while unset: older readers still read new records
    legacy = rec.to_json()
    assert DeliveryRecord.from_json(legacy) == rec and rec.digest_id is None
    await redis_client.set(keys.delivery("msg_old"), legacy.replace('"msg_1"', '"msg_old"'))
    assert (old := await store.get("msg_old")) is not None and old.digest_id is None
    assert set(STATUSES) == {"pending", "delivered", "failed", "digested"}


async def test_replace_action_only_while_pending(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys
) -> None:
    await store.schedule([record("msg_1", due_ms=NOW_MS + 5_000), record("msg_2")])
    before = await store.get("msg_1")
    assert before is not None
    frozen = {**before.action, "type": "fatigue.digest", "total": 3, "items": []}
    replaced = await store.replace_action("msg_1", frozen)
    assert replaced is not None and replaced.action == frozen
    assert replaced == type(before)(**{**before.__dict__, "action": frozen, "updated_at_ms": replaced.updated_at_ms})
    assert await store.get("msg_1") == replaced
    due = keys.deliveries_due(keys.delivery_shard("msg_1"))
    assert await redis_client.zscore(due, "msg_1") == NOW_MS + 5_000  # due time unchanged
    assert await redis_client.ttl(keys.delivery("msg_1")) == -1

    await store.mark_delivered("msg_2", attempts=1, last_status=200)
    assert await store.replace_action("msg_2", frozen) is None
    stored = await store.get("msg_2")
    assert stored is not None and stored.action != frozen
    assert await store.replace_action("msg_unknown", frozen) is None


async def test_held_deliveries_are_released_at_once_unless_they_moved_since(
    store: DeliveryStore, redis_client: RedisClient, keys: RedisKeys
) -> None:
    await store.schedule([record("msg_held"), record("msg_claimed"), record("msg_done"), record("msg_other")])
    for delivery_id in ("msg_held", "msg_claimed", "msg_done"):
        await store.hold(delivery_id, "sub_a", until_ms=NOW_MS + 30_000, last_error="held back: circuit open")
    await store.hold("msg_other", "sub_b", until_ms=NOW_MS + 30_000, last_error="held back: circuit open")
    held = await store.get("msg_held")
    assert held is not None and (held.attempts, held.next_attempt_at_ms) == (0, NOW_MS + 30_000)
    assert held.last_error == "held back: circuit open"
    await store.reschedule("msg_claimed", next_ms=NOW_MS + 45_000, attempts=0, last_status=None, last_error=None)
    await store.mark_delivered("msg_done", attempts=1, last_status=200)

    assert await store.release_held("sub_a", NOW_MS + 1_000) == 1  # only the one still waiting as held
    assert [r.id for r in await store.claim_due(NOW_MS + 1_000, lease_ms=5_000, limit=10)] == ["msg_held"]
    assert await store.release_held("sub_a", NOW_MS + 2_000) == 0  # the set is gone once released
    for shard in range(keys.delivery_shards):
        assert not await redis_client.exists(keys.deliveries_held("sub_a", shard))
    other_due = keys.deliveries_due(keys.delivery_shard("msg_other"))
    assert await redis_client.zscore(other_due, "msg_other") == NOW_MS + 30_000  # other endpoint


async def test_scheduling_waits_for_a_replica_when_asked(
    redis_target: RedisTarget, keys: RedisKeys, request: pytest.FixtureRequest
) -> None:
    """With wait_replicas, `schedule` returns only once a replica of every primary written to has the
    records (Redis WAIT), so the notifier commits an action's offset only after its deliveries would
    survive a failover. A replica that does not answer makes it a store outage (retried), not a loss."""
    store = DeliveryStore(redis_target.client, keys, wait_replicas=1, wait_timeout_ms=300)
    if redis_target.kind == "single":  # no replica at all: never acknowledged
        with pytest.raises(StoreUnavailable, match="0 of 1 Redis replicas acknowledged"):
            await store.schedule([record("msg_1")])
        assert await DeliveryStore(redis_target.client, keys).schedule([record("msg_2")]) == ["msg_2"]
        return
    cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    assert await store.schedule([record("msg_1")]) == ["msg_1"]
    [replica] = cluster.replicas_of(cluster.primary_of(keys.delivery("msg_2")))
    with cluster.paused(replica), pytest.raises(StoreUnavailable, match="0 of 1 Redis replicas acknowledged"):
        await store.schedule([record("msg_2"), record("msg_3")])
    assert await store.schedule([record("msg_2"), record("msg_3")]) == []  # stored, and replicated now
    assert await store.get("msg_2") is not None
