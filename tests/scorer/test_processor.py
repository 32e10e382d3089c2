"""The scorer's edge on a real Redis: atomic state + offsets, replays skipped, timers, conflicts.

The Kafka side is replaced by records built here and an in-memory action publisher — the
Faust worker on the real broker is covered in test_worker.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.processor import Processor, Record
from scorer.publisher import MemoryActionPublisher
from scorer.store import StateStore
from services import stored_values
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.durations import DAY_MS
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy

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


def make(redis: Redis, prefix: str) -> tuple[Processor, MemoryActionPublisher, ManualClock, ScorerMetrics]:
    publisher, clock = MemoryActionPublisher(), ManualClock(int(NOW.timestamp() * 1000))
    metrics = ScorerMetrics(CollectorRegistry())
    store = StateStore(redis, RedisKeys(prefix), "g")
    processor = Processor(
        store, publisher, default_policy, clock, metrics, events_topic=EVENTS, profiles_topic=PROFILES,
        dead_letters=MemoryDeadLetterSink(),
    )
    return processor, publisher, clock, metrics


async def snapshot_of(redis: Redis, prefix: str, customer: str) -> dict:
    raw = await redis.get(RedisKeys(prefix).snapshot(customer))
    assert raw, f"no snapshot for {customer}"
    return stored_values.loads(raw)


async def test_batch_commits_state_snapshot_and_offsets_together(redis_client: Redis, unique: str) -> None:
    processor, publisher, _, _ = make(redis_client, unique)
    await processor.process([event_record(o, o, days_ago=20 - o) for o in range(13)])
    # Unanswered: the streak throttles at the 5th touch, the cap (13 in 30 days) is an update; both in
    # one batch: the rep gets one message naming every active reason (issue 17), the update's moment.
    [sent] = publisher.published
    assert (sent["type"], sent.get("escalation"), sent["previous_status"]) == ("fatigue.throttle", None, "normal")
    assert [r["rule"] for r in sent["reasons"]] == ["frequency_cap", "unanswered_streak"]
    assert sent["at"] == (NOW - timedelta(days=8)).isoformat().replace("+00:00", ".000Z")
    assert sent["suggestion"].startswith("Cool down: 13 touches in 30d (cap 12); 13 touches in a row")
    snap = await snapshot_of(redis_client, unique, "c1")
    assert snap["status"] == "throttled" and snap["windows"]["30d"]["touches"]["total"] == 13
    assert await redis_client.hget(RedisKeys(unique).offsets("g"), f"{EVENTS}/0") == "12"


async def test_replayed_records_are_skipped_by_offset(redis_client: Redis, unique: str) -> None:
    """After a crash Kafka re-delivers from its committed offset: nothing counts twice."""
    processor, _, _, metrics = make(redis_client, unique)
    records = [event_record(o, o) for o in range(5)]
    await processor.process(records[:3])
    await processor.process(records)  # 0..2 again, then 3..4
    snap = await snapshot_of(redis_client, unique, "c1")
    assert snap["events_counted"] == 5
    assert metrics.events.labels("replayed")._value.get() == 3


async def test_bad_records_are_skipped_and_counted(redis_client: Redis, unique: str) -> None:
    processor, _, _, metrics = make(redis_client, unique)
    await processor.process([Record(EVENTS, 0, 0, b"not json"), event_record(1, 1)])
    assert metrics.events.labels("bad_record")._value.get() == 1
    assert (await snapshot_of(redis_client, unique, "c1"))["events_counted"] == 1
    assert await redis_client.hget(RedisKeys(unique).offsets("g"), f"{EVENTS}/0") == "1"


async def test_profiles_reach_the_snapshot_and_set_the_cadence(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = make(redis_client, unique)
    profile = ProfileEnvelope(customer_id="c1", updated_at=NOW, profile=ProfileIn(stage="prospect", owner_rep_id="r7"))
    await processor.process([Record(PROFILES, 0, 0, encode(profile)), event_record(0, 1, days_ago=0)])
    snap = await snapshot_of(redis_client, unique, "c1")
    assert snap["profile"]["stage"] == "prospect"
    clock.advance(6 * DAY_MS + 1)  # prospect cadence 5 d + tolerance 1 d, strictly after
    actions = await processor.fire_due([0])
    assert [a["type"] for a in actions] == ["fatigue.re_engage"]
    assert actions[0]["owner_rep_id"] == "r7"
    assert (await snapshot_of(redis_client, unique, "c1"))["status"] == "dormant"
    assert await processor.fire_due([0]) == []  # once per state change


async def test_timers_only_fire_for_the_partitions_asked(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = make(redis_client, unique)
    await processor.process(
        [event_record(0, 1, customer="a", partition=0), event_record(0, 2, customer="b", partition=1)]
    )
    clock.advance(31 * DAY_MS)
    assert {a["customer_id"] for a in await processor.fire_due([1])} == {"b"}
    assert {a["customer_id"] for a in await processor.fire_due([0, 1])} == {"a"}


async def test_a_concurrent_writer_forces_a_recompute_not_a_lost_update(redis_client: Redis, unique: str) -> None:
    """Two processors (a zombie during a rebalance) write the same customer: both events survive."""
    first, _, _, _ = make(redis_client, unique)
    second, _, _, _ = make(redis_client, unique)
    store = first._store
    txn = await store.read(["c1"], [])
    await second.process([event_record(0, 1, partition=0)])  # changes c1 under the open transaction
    from scorer.store import Changes, CommitConflict

    with pytest.raises(CommitConflict):
        await txn.commit(Changes(states={}, offsets={"x/0": 1}))
    await first.process([event_record(0, 2, partition=1)])
    assert (await snapshot_of(redis_client, unique, "c1"))["events_counted"] == 2


# ---- the lists reps work from, in the same transaction as the states ----


def touch_record(offset: int, i: int, customer: str, seconds_ago: float, partition: int = 0,
                 type_: str = "touch", kind: str | None = None) -> Record:
    body = EventIn.model_validate({
        "event_id": f"e{i}", "type": type_, "customer_id": customer, "channel": "phone",
        "occurred_at": (NOW - timedelta(seconds=seconds_ago)).isoformat(), **({"kind": kind} if kind else {}),
    })
    return Record(EVENTS, partition, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)))


async def lists_of(redis: Redis, prefix: str) -> dict[str, dict[str, float]]:
    keys = RedisKeys(prefix)
    return {name: dict(await redis.zrange(keys.customer_list(name), 0, -1, withscores=True))
            for name in ("throttled", "cooling_off", "to_activate")}


async def test_the_lists_follow_the_lifecycle_in_the_same_commit(redis_client: Redis, unique: str) -> None:
    processor, _, clock, _ = make(redis_client, unique)
    keys = RedisKeys(unique)
    profile = ProfileEnvelope(customer_id="s1", updated_at=NOW,
                              profile=ProfileIn(stage="intent", owner_rep_id="alice", tier="A"))
    records = [Record(PROFILES, 0, 0, encode(profile))]
    records += [touch_record(o, o, "s1", 5 * 3600 - o * 3600) for o in range(5)]  # 5 unanswered: cooling off
    await processor.process(records)
    fifth_touch_ms = int(NOW.timestamp() * 1000) - 3_600_000  # cooling off since then, in event time
    assert await lists_of(redis_client, unique) == {"throttled": {}, "cooling_off": {"s1": -fifth_touch_ms},
                                                   "to_activate": {}}
    assert await redis_client.zscore(keys.customer_list_by("cooling_off", "rep", "alice"), "s1") == -fifth_touch_ms
    assert await redis_client.zscore(keys.customer_list_by("cooling_off", "tier", "A"), "s1") == -fifth_touch_ms
    clock.advance(15 * DAY_MS)  # the rest (14 days without touches) is over
    (rested,) = await processor.fire_due([0])
    assert rested["type"] == "fatigue.re_engage" and rested["lifecycle"] == "to_activate"
    found = await lists_of(redis_client, unique)
    assert found["cooling_off"] == {} and list(found["to_activate"]) == ["s1"]
    assert await redis_client.zcard(keys.customer_list_by("cooling_off", "rep", "alice")) == 0
    snap = await snapshot_of(redis_client, unique, "s1")
    assert snap["lifecycle"]["list"] == "to_activate"
    # A touch ends the to_activate (a reply would too, but the reps' own silence — 15 days against the
    # 7-day cadence of stage intent — would put the customer straight back on the list).
    await processor.process([touch_record(5, 99, "s1", -15 * DAY_MS / 1000 + 1)])
    assert await lists_of(redis_client, unique) == {"throttled": {}, "cooling_off": {}, "to_activate": {}}
    assert await redis_client.hlen(keys.customer_list_entries()) == 0


async def test_a_conflicting_writer_leaves_the_lists_as_exact_as_the_states(redis_client: Redis, unique: str) -> None:
    first, _, _, _ = make(redis_client, unique)
    second, _, _, _ = make(redis_client, unique)
    txn = await first._store.read(["c1"], [])
    await second.process([touch_record(o, o, "c1", 3600 - o * 60) for o in range(5)])  # c1 cooling off
    from scorer.store import Changes, CommitConflict

    with pytest.raises(CommitConflict):
        await txn.commit(Changes(states={}, lists={"c1": None}))
    assert list((await lists_of(redis_client, unique))["cooling_off"]) == ["c1"]


async def test_a_batch_larger_than_one_write_chunk_commits_every_customer(redis_client: Redis, unique: str) -> None:
    """States, snapshots and due times go to Redis as MSETs and ZADDs of at most MAX_PAIRS entries
    each: a batch of more customers than that spans several, all in the one transaction."""
    from scorer.store import MAX_PAIRS

    processor, _, _, _ = make(redis_client, unique)
    n = MAX_PAIRS + 37  # states + snapshots: 2n values, three MSETs; due times: two ZADDs
    await processor.process([event_record(o, o, customer=f"c{o}") for o in range(n)])
    keys = RedisKeys(unique)
    states = await redis_client.mget([keys.state(f"c{o}") for o in range(n)])
    snapshots = await redis_client.mget([keys.snapshot(f"c{o}") for o in range(n)])
    assert all(states) and all(snapshots)
    assert [stored_values.loads(s)["customer_id"] for s in snapshots] == [f"c{o}" for o in range(n)]
    due = dict(await redis_client.zrange(keys.due("g", 0), 0, -1, withscores=True))
    assert set(due) == {f"c{o}" for o in range(n)}
    assert int(due["c0"]) == json_ms(stored_values.loads(snapshots[0])["next_check_at"])
    assert await redis_client.hget(keys.offsets("g"), f"{EVENTS}/0") == str(n - 1)


def json_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_the_lag_gauge_reports_the_oldest_event_of_the_batch(redis_client: Redis, unique: str) -> None:
    """One partition an hour behind, the other current, the current one processed last: the gauge
    says an hour (the last event's lag would hide the slow partition)."""
    processor, _, _, metrics = make(redis_client, unique)

    def received(offset: int, customer: str, partition: int, ago: timedelta) -> Record:
        body = EventIn.model_validate({"event_id": f"{customer}-{offset}", "type": "touch", "customer_id": customer,
                                       "channel": "email", "occurred_at": (NOW - ago).isoformat()})
        value = encode(EventEnvelope(producer="p", received_at=NOW - ago, event=body))
        return Record(EVENTS, partition, offset, value)

    await processor.process([received(0, "slow", 0, timedelta(hours=1)), received(0, "fresh", 1, timedelta(seconds=2))])
    assert metrics.lag_seconds._value.get() == pytest.approx(3600)
