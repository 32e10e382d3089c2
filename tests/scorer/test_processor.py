"""The scorer's edge on a real Redis: one commit per partition batch (state, view, lists, timers,
offsets), replays skipped, timers per partition, a zombie owner fenced.

The Kafka side is replaced by records built here and an in-memory action publisher — the worker on
the real broker is covered in test_worker.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.decoding import Record
from scorer.partition_store import Fenced, PartitionChanges, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.state_cache import StateCache
from services import stored_values
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.durations import DAY_MS
from services.errors import StoreUnavailable
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy
from services.redisio import RedisClient
from tests.conftest import RedisTarget
from tests.scorer.stored import snapshot_of, view_of

pytestmark = pytest.mark.integration

EVENTS, PROFILES = "ev", "pr"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def event_record(offset: int, i: int, customer: str = "c1", days_ago: float = 1.0, partition: int = 0) -> Record:
    body = EventIn.model_validate({
        "event_id": f"e{i}", "type": "touch", "customer_id": customer, "channel": "email",
        "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
    })
    value = encode(EventEnvelope(producer="p", received_at=NOW, event=body))
    return Record(EVENTS, partition, offset, value)


async def make(redis: RedisClient, prefix: str, partitions: tuple[int, ...] = (0, 1), cache: int = 10_000,
               settle_s: float = 0.0, cluster: bool = False,
               ) -> tuple[Processor, MemoryActionPublisher, ManualClock, ScorerMetrics]:
    """A Processor on `redis` owning `partitions`; on a Cluster its commits wait for a replica (the default)."""
    publisher, clock = MemoryActionPublisher(), ManualClock(int(NOW.timestamp() * 1000))
    metrics = ScorerMetrics(CollectorRegistry())
    processor = Processor(
        RedisPartitionStore(redis, RedisKeys(prefix, cluster=cluster), wait_replicas=int(cluster)), publisher,
        default_policy, clock, metrics,
        events_topic=EVENTS, profiles_topic=PROFILES, dead_letters=MemoryDeadLetterSink(), cache=StateCache(cache),
        timer_settle_s=settle_s,
    )
    await processor.assign(list(partitions))
    return processor, publisher, clock, metrics


async def test_batch_commits_state_view_and_offsets_together(redis_client: Redis, unique: str) -> None:
    processor, publisher, _, _ = await make(redis_client, unique)
    await processor.process(0, [event_record(o, o, days_ago=20 - o) for o in range(13)])
    # Unanswered: the streak throttles at the 5th touch, the cap (13 in 30 days) is an update; both in
    # one batch: the rep gets one message naming every active reason (issue 17), the update's moment.
    [sent] = publisher.published
    assert (sent["type"], sent.get("escalation"), sent["previous_status"]) == ("fatigue.throttle", None, "normal")
    assert [r["rule"] for r in sent["reasons"]] == ["frequency_cap", "unanswered_streak"]
    assert sent["at"] == (NOW - timedelta(days=8)).isoformat().replace("+00:00", ".000Z")
    assert sent["suggestion"].startswith("Cool down: 13 touches in 30d (cap 12); 13 touches in a row")
    snap = await snapshot_of(redis_client, unique, 0, "c1", NOW)
    assert snap["status"] == "throttled" and snap["windows"]["30d"]["touches"]["total"] == 13
    view = await view_of(redis_client, unique, 0, "c1")
    assert view["frequency"]["counted_touches"] == 13 and view["lifecycle"]["state"] == "throttled"
    keys = RedisKeys(unique).partition(0)
    assert await redis_client.hget(keys.offsets(), EVENTS) == "12"


async def test_replayed_records_are_skipped_by_offset(redis_client: Redis, unique: str) -> None:
    """After a crash Kafka re-delivers from wherever it was: the stored offsets say what is done."""
    processor, _, _, metrics = await make(redis_client, unique)
    records = [event_record(o, o) for o in range(5)]
    await processor.process(0, records[:3])
    await processor.process(0, records)  # 0..2 again, then 3..4
    assert (await snapshot_of(redis_client, unique, 0, "c1", NOW))["events_counted"] == 5
    assert metrics.events.labels("replayed")._value.get() == 3
    # a new owner (a restart) starts from the stored offsets, not from its own memory
    restarted, _, _, metrics = await make(redis_client, unique, cache=0)
    await restarted.process(0, records)
    assert metrics.events.labels("replayed")._value.get() == 5
    assert restarted.position(0, EVENTS) == 5


async def test_bad_records_are_skipped_and_counted(redis_client: Redis, unique: str) -> None:
    processor, _, _, metrics = await make(redis_client, unique)
    await processor.process(0, [Record(EVENTS, 0, 0, b"not json"), event_record(1, 1)])
    assert metrics.events.labels("bad_record")._value.get() == 1
    assert (await snapshot_of(redis_client, unique, 0, "c1", NOW))["events_counted"] == 1
    assert await redis_client.hget(RedisKeys(unique).partition(0).offsets(), EVENTS) == "1"


async def test_profiles_reach_the_state_and_set_the_cadence(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = await make(redis_client, unique)
    profile = ProfileEnvelope(customer_id="c1", updated_at=NOW, profile=ProfileIn(stage="prospect", owner_rep_id="r7"))
    await processor.process(0, [Record(PROFILES, 0, 0, encode(profile)), event_record(0, 1, days_ago=0)])
    assert (await snapshot_of(redis_client, unique, 0, "c1", NOW))["profile"]["stage"] == "prospect"
    clock.advance(6 * DAY_MS + 1)  # prospect cadence 5 d + tolerance 1 d, strictly after
    actions = await processor.fire_due(0)
    assert [a["type"] for a in actions] == ["fatigue.re_engage"]
    assert actions[0]["owner_rep_id"] == "r7"
    assert (await view_of(redis_client, unique, 0, "c1"))["status"] == "dormant"
    assert await processor.fire_due(0) == []  # once per state change


async def test_timers_only_fire_for_the_partition_asked(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = await make(redis_client, unique)
    await processor.process(0, [event_record(0, 1, customer="a", partition=0)])
    await processor.process(1, [event_record(0, 2, customer="b", partition=1)])
    clock.advance(31 * DAY_MS)
    assert {a["customer_id"] for a in await processor.fire_due(1)} == {"b"}
    assert {a["customer_id"] for a in await processor.fire_due(0)} == {"a"}


async def test_timers_fire_a_settle_after_they_are_due_and_wait_for_a_backlog(
        redis_client: Redis, unique: str) -> None:
    """A timer fires `timer_settle` after its due time (an event that happened before it and arrives
    up to that late is evaluated first), and — while its partition is behind, a backlog waiting — no
    further than the partition's event-time watermark less the same."""
    processor, _, clock, _ = await make(redis_client, unique, settle_s=1)
    assert await processor.process(0, [event_record(0, 1, customer="a", days_ago=40)]) == []  # history: waits
    watermark = int((NOW - timedelta(days=40)).timestamp() * 1000)
    assert processor.timer_bound_ms(0, clock.now_ms()) == clock.now_ms() - 1000
    assert processor.timer_bound_ms(0, clock.now_ms(), behind=True) == watermark - 1000
    clock.advance(1000)
    assert await processor.fire_due(0, behind=True) == []  # the cadence (31 d) is past by the clock only
    assert [a["type"] for a in await processor.fire_due(0)] == ["fatigue.re_engage"]


async def test_a_zombie_owner_commits_nothing_and_is_told_so(redis_target: RedisTarget, unique: str) -> None:
    """Two workers that both believe they own partition 0: the one that claimed it last wins; the
    other's batch is refused whole (Fenced) and its cached states are dropped with the partition.
    On one Redis and on a Cluster."""
    redis, cluster = redis_target.client, redis_target.kind == "cluster"
    zombie, zombie_actions, _, _ = await make(redis, unique, partitions=(0,), cluster=cluster)
    await zombie.process(0, [event_record(0, 1)])
    owner, _, _, _ = await make(redis, unique, partitions=(0,), cluster=cluster)
    await owner.process(0, [event_record(1, 2)])
    with pytest.raises(Fenced):
        await zombie.process(0, [event_record(2, 3)])
    snap = await snapshot_of(redis, unique, 0, "c1", NOW)
    assert snap["events_counted"] == 2  # e1 (zombie, before the claim) and e2 (owner); never e3
    assert await redis.hget(RedisKeys(unique).partition(0).offsets(), EVENTS) == "1"
    zombie.revoke([0])
    assert zombie.owned() == [] and zombie_actions.published == []


# ---- the lists reps work from, in the same commit as the states ----


def touch_record(offset: int, i: int, customer: str, seconds_ago: float, partition: int = 0,
                 type_: str = "touch", kind: str | None = None) -> Record:
    body = EventIn.model_validate({
        "event_id": f"e{i}", "type": type_, "customer_id": customer, "channel": "phone",
        "occurred_at": (NOW - timedelta(seconds=seconds_ago)).isoformat(), **({"kind": kind} if kind else {}),
    })
    return Record(EVENTS, partition, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)))


async def lists_of(redis: Redis, prefix: str, partition: int = 0) -> dict[str, dict[str, float]]:
    keys = RedisKeys(prefix).partition(partition)
    return {name: dict(await redis.zrange(keys.customer_list(name), 0, -1, withscores=True))
            for name in ("throttled", "cooling_off", "to_activate")}


async def test_the_lists_follow_the_lifecycle_in_the_same_commit(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = await make(redis_client, unique)
    keys = RedisKeys(unique).partition(0)
    profile = ProfileEnvelope(customer_id="s1", updated_at=NOW,
                              profile=ProfileIn(stage="intent", owner_rep_id="alice", tier="A"))
    records = [Record(PROFILES, 0, 0, encode(profile))]
    records += [touch_record(o, o, "s1", 5 * 3600 - o * 3600) for o in range(5)]  # 5 unanswered: cooling off
    await processor.process(0, records)
    fifth_touch_ms = int(NOW.timestamp() * 1000) - 3_600_000  # cooling off since then, in event time
    assert await lists_of(redis_client, unique) == {"throttled": {}, "cooling_off": {"s1": -fifth_touch_ms},
                                                   "to_activate": {}}
    assert await redis_client.zscore(keys.customer_list_by("cooling_off", "rep", "alice"), "s1") == -fifth_touch_ms
    assert await redis_client.zscore(keys.customer_list_by("cooling_off", "tier", "A"), "s1") == -fifth_touch_ms
    clock.advance(15 * DAY_MS)  # the rest (14 days without touches) is over
    (rested,) = await processor.fire_due(0)
    assert rested["type"] == "fatigue.re_engage" and rested["lifecycle"] == "to_activate"
    found = await lists_of(redis_client, unique)
    assert found["cooling_off"] == {} and list(found["to_activate"]) == ["s1"]
    assert await redis_client.zcard(keys.customer_list_by("cooling_off", "rep", "alice")) == 0
    # A touch ends the to_activate (a reply would too, but the reps' own silence — 15 days against the
    # 7-day cadence of stage intent — would put the customer straight back on the list).
    await processor.process(0, [touch_record(5, 99, "s1", -15 * DAY_MS / 1000 + 1)])
    assert await lists_of(redis_client, unique) == {"throttled": {}, "cooling_off": {}, "to_activate": {}}
    assert await redis_client.hlen(keys.customer_list_entries()) == 0


async def test_a_batch_larger_than_one_op_commits_every_customer(redis_client: Redis, unique: str) -> None:
    """States, views and due times go to Redis as HSETs and ZADDs of at most MAX_ARGS_PER_OP
    arguments each: a batch of more customers than that spans several, all in the one script."""
    from scorer.partition_store import MAX_ARGS_PER_OP

    processor, _, _, _ = await make(redis_client, unique)
    n = MAX_ARGS_PER_OP // 2 + 37
    await processor.process(0, [event_record(o, o, customer=f"c{o}") for o in range(n)])
    keys = RedisKeys(unique).partition(0)
    assert await redis_client.hlen(keys.states()) == n and await redis_client.hlen(keys.views()) == n
    views = await redis_client.hmget(keys.views(), [f"c{o}" for o in range(n)])
    assert [stored_values.loads(v)["customer_id"] for v in views] == [f"c{o}" for o in range(n)]
    assert await redis_client.zcard(keys.due()) == n
    assert await redis_client.hget(keys.offsets(), EVENTS) == str(n - 1)


async def test_the_partitions_event_time_and_arrival_are_kept_for_the_timers_and_lag(
        redis_client: Redis, unique: str) -> None:
    processor, _, _, _ = await make(redis_client, unique)
    await processor.process(0, [event_record(0, 1, days_ago=3), event_record(1, 2, days_ago=2)])
    owned = processor.owned_partition(0)
    assert owned is not None
    assert owned.stream_time_ms == int((NOW - timedelta(days=2)).timestamp() * 1000)
    assert owned.received_at_ms == int(NOW.timestamp() * 1000)


class AppliedButUnacknowledged(RedisPartitionStore):
    """A commit Redis applied whose acknowledgement was lost (a WAIT that timed out, a connection cut
    after the write): the scorer sees an outage."""

    fail_next = False

    async def commit(self, partition: int, epoch: int, changes: PartitionChanges) -> None:
        await super().commit(partition, epoch, changes)
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("1 of 1 Redis replicas did not acknowledge the writes within 2000 ms")


async def test_a_retry_after_a_commit_of_unknown_outcome_counts_nothing_twice(redis_client: Redis, unique: str) -> None:
    store = AppliedButUnacknowledged(redis_client, RedisKeys(unique))
    metrics = ScorerMetrics(CollectorRegistry())
    processor = Processor(store, MemoryActionPublisher(), default_policy, ManualClock(int(NOW.timestamp() * 1000)),
                          metrics, events_topic=EVENTS, profiles_topic=PROFILES, dead_letters=MemoryDeadLetterSink())
    await processor.assign([0])
    await processor.process(0, [event_record(0, 0)])
    store.fail_next = True
    batch = [event_record(1, 1), event_record(2, 2)]
    with pytest.raises(StoreUnavailable):
        await processor.process(0, batch)
    await processor.process(0, batch)  # retried in place, as the consumer does on an outage
    assert (await snapshot_of(redis_client, unique, 0, "c1", NOW))["events_counted"] == 3
    assert processor.position(0, EVENTS) == 3
    # skipped by the stored offsets it read again, not applied again onto the state as committed
    assert metrics.events.labels("replayed")._value.get() == 2
    assert metrics.events.labels("duplicate")._value.get() == 0


async def test_each_batch_reports_its_record_count(redis_client: Redis, unique: str) -> None:
    """`fatigue_scorer_batch_records` on /metrics: one observation per partition batch, of its records (bad
    ones included), so an operator (and `make bench`) can see batches far below FATIGUE_BATCH_MAX_EVENTS."""
    registry = CollectorRegistry()
    processor = Processor(
        RedisPartitionStore(redis_client, RedisKeys(unique)), MemoryActionPublisher(), default_policy,
        ManualClock(int(NOW.timestamp() * 1000)), ScorerMetrics(registry), events_topic=EVENTS,
        profiles_topic=PROFILES, dead_letters=MemoryDeadLetterSink(),
    )
    await processor.assign([0, 1])
    await processor.process(0, [event_record(o, o) for o in range(7)])
    await processor.process(1, [Record(EVENTS, 1, 0, b"not json"), event_record(1, 8, customer="c2", partition=1)])
    assert registry.get_sample_value("fatigue_scorer_batch_records_count") == 2
    assert registry.get_sample_value("fatigue_scorer_batch_records_sum") == 9
    assert registry.get_sample_value("fatigue_scorer_batch_records_bucket", {"le": "5.0"}) == 1
