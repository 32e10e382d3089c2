"""`fatigue repartition --partitions N` as a subprocess against the session's broker and Redis: each refused
precondition names what to do and changes nothing; while a re-partition is marked, the scorer, the API and
`fatigue customers` refuse to start; the whole procedure 3 -> 6 with real scorers before and after.

Two gaps of the embedded broker (Tansu 0.6) shape these tests, both measured here: it does not implement
CreatePartitions (the command refuses, naming the brokers' own tool: tested below), so the topics of a
successful run are created with 6 partitions up front, the first 3 used as a 3-partition topic's; and
it keeps a consumer group's member listed after the consumer left, so the scorer before the change and
the one after run in two groups (a live member's refusal is tested with a consumer still in its group).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from fatigue.embedded import free_port
from services.contract import EventEnvelope, EventIn, encode
from services.errors import StoreUnavailable
from services.kafka import ensure_topics, make_producer
from services.partitions import RepartitionInProgress, partition_of
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, event, service_process, stored_snapshots, wait_until
from tests.ingest.helpers import ingest_settings_for, running_api
from tests.scorer.test_repartition_move import DiesAfterCopying
from tests.scorer_feed import ScorerFeed

pytestmark = pytest.mark.integration


def repartition(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fatigue.cli", "repartition", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def settings_of(infra_env: dict[str, str], partitions: int) -> CommonSettings:
    return CommonSettings(kafka_bootstrap_servers=infra_env["KAFKA_BOOTSTRAP_SERVERS"],
                          redis_url=infra_env["REDIS_URL"], topic_prefix=infra_env["FATIGUE_TOPIC_PREFIX"],
                          redis_prefix=infra_env["FATIGUE_REDIS_PREFIX"], partitions=partitions)


@pytest.fixture
def env(infra_env: dict[str, str], unique: str) -> dict[str, str]:
    return {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}"}


@pytest.fixture
async def six_partition_topics(infra_env: dict[str, str]) -> CommonSettings:
    """The topics with 6 partitions (as `--partitions 6` grows them on Apache Kafka); FATIGUE_PARTITIONS=3."""
    await ensure_topics(settings_of(infra_env, 6))
    return settings_of(infra_env, 3)


async def record(redis: Redis, settings: CommonSettings, **fields: str) -> None:
    await redis.hset(settings.keys.meta(), mapping=fields)


async def meta(redis: Redis, settings: CommonSettings) -> dict[str, str]:
    found: dict[str, str] = await redis.hgetall(settings.keys.meta())
    return found


# ---- refusals: each names what to do, nothing changes ----


async def test_fewer_partitions_are_refused_and_the_same_count_is_nothing_to_do(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    await record(redis_client, six_partition_topics, partitions="6")
    fewer = repartition(env, "--partitions", "3")
    assert fewer.returncode == 2, fewer.stderr
    assert "Kafka cannot take partitions away" in fewer.stderr
    assert "what to do: Keep FATIGUE_PARTITIONS=6" in fewer.stderr
    same = repartition(env, "--partitions", "6")
    assert same.returncode == 0, same.stderr
    assert "already written for 6 partitions: nothing to do" in same.stdout
    assert await meta(redis_client, six_partition_topics) == {"partitions": "6"}


async def test_a_member_in_the_scorers_group_is_named_and_refused(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    settings = six_partition_topics
    await record(redis_client, settings, partitions="3")
    scorer = AIOKafkaConsumer(settings.events_topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                              group_id=env["FATIGUE_SCORER_APP_ID"], client_id="still-running-scorer",
                              session_timeout_ms=6000, heartbeat_interval_ms=1000)
    await scorer.start()
    try:
        await wait_until(lambda: _assigned(scorer), 30, "the consumer in its group")
        refused = repartition(env, "--partitions", "6")
    finally:
        await scorer.stop()
    assert refused.returncode == 2, refused.stderr
    assert f"consumer group {env['FATIGUE_SCORER_APP_ID']} has 1 member(s): still-running-scorer-" in refused.stderr
    assert "what to do: Stop every scorer" in refused.stderr
    assert await meta(redis_client, settings) == {"partitions": "3"}


async def _assigned(consumer: AIOKafkaConsumer) -> bool:
    await consumer.getmany(timeout_ms=200)
    return bool(consumer.assignment())


async def test_records_not_processed_are_named_per_partition_and_refused(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    settings = six_partition_topics
    await record(redis_client, settings, partitions="3")
    await redis_client.hset(settings.keys.partition(2).offsets(), settings.events_topic, "0")  # 1 of 2 done
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        for partition in (1, 2, 2):
            await (await producer.send(settings.events_topic, b"{}", key=b"k", partition=partition))
    finally:
        await producer.stop()
    refused = repartition(env, "--partitions", "6")
    assert refused.returncode == 2, refused.stderr
    assert f"{settings.events_topic}/1: 1 records not processed (stored offset none, log end 1)" in refused.stderr
    assert f"{settings.events_topic}/2: 1 records not processed (stored offset 0, log end 2)" in refused.stderr
    assert f"{settings.profiles_topic}/" not in refused.stderr
    assert "what to do: Stop the intake" in refused.stderr
    assert await meta(redis_client, settings) == {"partitions": "3"}


async def test_another_repartition_in_progress_is_named(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    await record(redis_client, six_partition_topics, partitions="3", repartition="9")
    refused = repartition(env, "--partitions", "6")
    assert refused.returncode == 2, refused.stderr
    assert "a re-partition to 9 partitions is in progress" in refused.stderr
    assert "what to do: Finish it first: `fatigue repartition --partitions 9`" in refused.stderr


async def test_brokers_that_cannot_add_partitions_are_named_with_the_manual_step(
        common_settings: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    """The embedded broker has no CreatePartitions: nothing is marked, the operator is told what to run."""
    await record(redis_client, common_settings, partitions="3")
    refused = repartition(env, "--partitions", "6")
    assert refused.returncode == 2, refused.stderr
    assert "the brokers cannot add partitions" in refused.stderr
    assert "kafka-topics.sh --alter --partitions 6" in refused.stderr
    assert await meta(redis_client, common_settings) == {"partitions": "3"}


async def test_redis_not_answering_is_an_outage(six_partition_topics: CommonSettings, env: dict[str, str]) -> None:
    down = repartition({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "--partitions", "6")
    assert down.returncode == 1, down.stderr
    assert "what to do: Check that the Redis server in REDIS_URL is up" in down.stderr


async def test_an_interrupted_run_is_finished_by_running_it_again(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis) -> None:
    """Killed between a copy and its delete, after the topics grew (a record already in a new partition):
    the same command finishes it, and ends where one run ends."""
    settings = six_partition_topics
    feed = ScorerFeed(redis_client, settings.keys, 3, datetime.now(UTC))
    customers = [f"i{n}" for n in range(60)]
    await feed.process([feed.event(c, 1) for c in customers])
    await record(redis_client, settings, partitions="3")
    await redis_client.hset(settings.keys.meta(), "repartition", "6")  # what the killed run had marked
    with pytest.raises(StoreUnavailable):
        await DiesAfterCopying(redis_client, settings.keys, 3, 6, batch=5).run()
    await _produce_one(settings, partition=4)  # a new partition, after the growth: not the old layout's
    done = repartition(env, "--partitions", "6")
    assert done.returncode == 0, done.stderr
    assert "re-partitioned 3 -> 6 partitions (an interrupted run finished)" in done.stdout
    assert await meta(redis_client, settings) == {"partitions": "6"}
    for c in customers:
        for p in range(6):
            here = await redis_client.hexists(settings.keys.partition(p).states(), c)
            assert here == (p == partition_of(c, 6)), (c, p)


async def _produce_one(settings: CommonSettings, partition: int) -> None:
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        await (await producer.send(settings.events_topic, b"{}", key=b"k", partition=partition))
    finally:
        await producer.stop()


# ---- while a re-partition is marked, nothing that reads or writes customers starts ----


async def test_the_scorer_the_api_and_fatigue_customers_refuse_to_start_while_marked(
        common_settings: CommonSettings, env: dict[str, str], redis_client: Redis, tmp_path: Path) -> None:
    await record(redis_client, common_settings, partitions="3", repartition="6")
    customers = subprocess.run([sys.executable, "-m", "fatigue.cli", "customers", "list", "throttled"],
                               env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)
    assert customers.returncode == 2
    assert "what to do: Finish it: `fatigue repartition --partitions 6`" in customers.stderr
    with pytest.raises(RepartitionInProgress, match="re-partition to 6 partitions is in progress"):
        async with running_api(ingest_settings_for(common_settings)):
            pass
    scorer_env = {**env, "FATIGUE_WEB_PORT": "0", "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    with service_process("scorer", scorer_env, tmp_path) as proc:
        assert proc.wait(timeout=60) == 2
    log = next(tmp_path.glob("scorer-*.log")).read_text()
    assert "fatigue repartition --partitions 6" in log


# ---- the whole procedure, with real scorers ----


async def produce(settings: CommonSettings, events: list[dict[str, Any]],
                  partition: Callable[[str], int | None]) -> list[tuple[int, int]]:
    """The events as the API puts them on the topic, each in `partition(customer)` (None: the producer's
    own partitioner, murmur2 of the key over the topic's partitions); where they landed (partition, offset)."""
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        now, futures = datetime.now(UTC), []
        for body in events:
            value = encode(EventEnvelope(producer="tests", received_at=now, event=EventIn.model_validate(body)))
            futures.append(await producer.send(settings.events_topic, value, key=body["customer_id"].encode(),
                                               partition=partition(body["customer_id"])))
        return [((m := await f).partition, m.offset) for f in futures]
    finally:
        await producer.stop()


async def counted(redis: Redis, settings: CommonSettings, customers: list[str]) -> int:
    return sum(s["events_counted"] for s in (await stored_snapshots(redis, settings, customers)).values())


async def api_reads(settings: CommonSettings, customers: list[str]) -> dict[str, Any]:
    """What the API answers about the customers, the lists and the decisions (time-independent fields)."""
    async with running_api(ingest_settings_for(settings)) as api:
        snaps = {c: (await api.get(f"/v1/customers/{c}")).json() for c in customers}
        decisions = {c: (await api.get(f"/v1/customers/{c}/decision", params={"channel": "email"})).json()["decision"]
                     for c in customers}
        lists = {name: [(i["customer_id"], i["state"], i["since"], [r["rule"] for r in i["reasons"]])
                        for i in (await api.get("/v1/customers", params={"list": name, "limit": 500})).json()["items"]]
                 for name in ("throttled", "cooling_off", "to_activate")}
    return {"customers": {c: (s["status"], s["events_counted"], s["lifecycle"]["state"]) for c, s in snaps.items()},
            "decisions": decisions, "lists": lists}


def history_of(i: int, customer: str) -> list[dict[str, Any]]:
    """13 touches in 6 days (throttled) for every third customer, 5 unanswered in 3 days (cooling off) else."""
    if i % 3 == 0:
        return [event(t, customer, days_ago=6 - t * 0.4) for t in range(13)]
    return [event(t, customer, days_ago=3 - t * 0.5) for t in range(5)]


async def test_repartition_3_to_6_moves_the_state_and_a_scorer_on_6_counts_on_exactly_once(
        six_partition_topics: CommonSettings, env: dict[str, str], redis_client: Redis, unique: str,
        tmp_path: Path) -> None:
    three = six_partition_topics
    six = three.model_copy(update={"partitions": 6})
    customers = [f"r{i}" for i in range(120)]
    history = [e for i, c in enumerate(customers) for e in history_of(i, c)]
    await produce(three, history, lambda c: partition_of(c, 3))  # a 3-partition topic's partitions
    before_env = {**env, "FATIGUE_SCORER_APP_ID": f"before-{unique}", "FATIGUE_WEB_PORT": "0",
                  "FATIGUE_DATA_DIR": str(tmp_path / "before")}
    with service_process("scorer", before_env, tmp_path):
        await wait_until(lambda: _at_least(counted(redis_client, three, customers), len(history)), 90,
                         "the history counted on 3 partitions")
    before = await api_reads(three, customers)
    assert before["lists"]["throttled"] and before["lists"]["cooling_off"]

    after_group = f"after-{unique}"
    done = repartition({**env, "FATIGUE_SCORER_APP_ID": after_group}, "--partitions", "6")
    assert done.returncode == 0, done.stderr
    moved = [c for c in customers if partition_of(c, 6) != partition_of(c, 3)]
    assert f"moved {len(moved)} customers" in done.stdout and "FATIGUE_PARTITIONS=6" in done.stdout
    assert await meta(redis_client, three) == {"partitions": "6", "layout": "2"}
    assert await api_reads(six, customers) == before

    later = [event(f"new-{i}", c, days_ago=0.01) for i, c in enumerate(customers)]
    landed = await produce(six, later, lambda c: None)  # the producers' own partitioner, on 6 partitions now
    assert [p for p, _ in landed] == [partition_of(c, 6) for c in customers] and any(p >= 3 for p, _ in landed)
    landed += await produce(six, history[:20], lambda c: None)  # duplicates by event id, in the new partitions
    after_env = {**env, "FATIGUE_PARTITIONS": "6", "FATIGUE_SCORER_APP_ID": after_group, "FATIGUE_WEB_PORT": "0",
                 "FATIGUE_DATA_DIR": str(tmp_path / "after")}
    with service_process("scorer", after_env, tmp_path):
        await wait_until(lambda: _at_least(counted(redis_client, six, customers), len(history) + len(later)), 90,
                         "the new events counted on 6 partitions")
        await wait_until(lambda: _offsets_cover(redis_client, six, landed), 30, "every new record processed")
    assert await counted(redis_client, six, customers) == len(history) + len(later)
    for c in moved:  # nothing of a moved customer is left where it was
        assert await redis_client.hget(six.keys.partition(partition_of(c, 3)).states(), c) is None


async def _at_least(value: Any, n: int) -> int | None:
    found = await value
    return found if found >= n else None


async def _offsets_cover(redis: Redis, settings: CommonSettings, landed: list[tuple[int, int]]) -> bool:
    """The offsets stored with the partitions' states reach every record produced."""
    last: dict[int, int] = {}
    for partition, offset in landed:
        last[partition] = max(offset, last.get(partition, -1))
    for partition, offset in last.items():
        stored = await redis.hget(settings.keys.partition(partition).offsets(), settings.events_topic)
        if stored is None or int(stored) < offset:
            return False
    return True
