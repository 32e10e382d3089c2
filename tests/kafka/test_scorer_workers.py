"""Three `fatigue scorer` workers on 12 partitions of Apache Kafka, with load flowing while one is
killed with SIGKILL and another added: the consumer group rebalances twice (the dead member's
partitions move after its session times out; the new member takes its share), a partition may be
processed by two workers around a move, and still every customer's counts are exact.

The scorer's own guarantees carry it (docs/architecture.md): a batch commits its states and offsets
to Redis in one transaction guarded by WATCH, records at or below the stored offset are skipped,
and Kafka's committed offset never passes Redis's. The test asserts on data only: every customer's
snapshot against a recount of the events it was sent, and every partition's stored offset at its end.
"""

from __future__ import annotations

import asyncio
import random
import signal
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from services import stored_values
from services.contract import to_ms
from services.kafka import ensure_topics
from services.settings import CommonSettings
from tests.helpers import event, produce_events, service_process, wait_until
from tests.kafka.conftest import KAFKA_GROUP_ENV
from tests.kafka.helpers import partitions_of
from tests.scorer.test_recovery import WINDOWS_MS, recount

pytestmark = pytest.mark.apache_kafka

PARTITIONS = 12


@pytest.mark.timeout(300)
async def test_three_workers_one_killed_one_added_under_load_count_every_customer_exactly(
    kafka_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    env = {**kafka_env, **KAFKA_GROUP_ENV, "FATIGUE_PARTITIONS": str(PARTITIONS),
           "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0", "FATIGUE_BATCH_MAX_EVENTS": "100"}
    settings = CommonSettings.from_env(env)
    await ensure_topics(settings)
    assert len(await partitions_of(settings.kafka_bootstrap_servers, settings.events_topic)) == PARTITIONS
    rng = random.Random(19)
    customers = [f"w{n}" for n in range(120)]
    per_customer = {
        c: sorted((event(i, c, days_ago=rng.uniform(0, 6), type_=rng.choice(["touch", "touch", "response"]),
                         channel=rng.choice(["email", "sms", "phone"])) for i in range(30)),
                  key=lambda e: e["occurred_at"])
        for c in customers
    }
    stream = [per_customer[c][i] for i in range(30) for c in customers]  # 3,600 events, interleaved
    chunks = [stream[i:i + 200] for i in range(0, len(stream), 200)]
    keys = [settings.keys.snapshot(c) for c in customers]

    async def counted() -> int:
        return sum(stored_values.loads(r)["events_counted"] for r in await redis_client.mget(keys) if r)

    async def flowing() -> None:  # the load: a chunk a second, ~18 s, while the group changes
        for chunk in chunks:
            await produce_events(settings, chunk)
            await asyncio.sleep(1.0)

    with ExitStack() as workers:
        procs = [workers.enter_context(service_process("scorer", {**env, "FATIGUE_DATA_DIR": str(tmp_path / f"w{n}")},
                                                       tmp_path)) for n in range(3)]
        load = asyncio.create_task(flowing())
        await wait_until(lambda: _at_least(counted, 600), 90, "the three workers under way")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        workers.enter_context(service_process("scorer", {**env, "FATIGUE_DATA_DIR": str(tmp_path / "w3")}, tmp_path))
        assert not load.done(), "the load ended before the group changed"
        await load
        await wait_until(lambda: _at_least(counted, len(stream)), 150, f"all {len(stream)} events counted")
        offsets = await _wait_offsets_at_end(redis_client, settings, f"scorer-{unique}", len(stream))
        snapshots = {c: stored_values.loads(r) for c, r in zip(customers, await redis_client.mget(keys), strict=True)}
        members = await wait_until(lambda: _members(settings, f"scorer-{unique}", 3), 60, "the group of three")

    assert len(members) == 3  # the killed worker left the group, the added one joined it
    assert sum(offsets.values()) == len(stream) and len(offsets) == PARTITIONS
    for customer, snap in snapshots.items():
        assert snap["events_counted"] == 30, customer
        now_ms = to_ms(datetime.fromisoformat(snap["as_of"].replace("Z", "+00:00")).astimezone(UTC))
        for label, window_ms in WINDOWS_MS.items():
            for type_, plural in (("touch", "touches"), ("response", "responses")):
                expected = recount([e for e in per_customer[customer] if e["type"] == type_], window_ms, now_ms)
                assert snap["windows"][label][plural]["total"] == expected, (customer, label, type_)


async def _at_least(count, n: int) -> int | None:
    value = await count()
    return value if value >= n else None


async def _members(settings: CommonSettings, group: str, expected: int) -> list[str] | None:
    """The member ids of a stable consumer group, once it has `expected` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.to_object()["groups"]
    finally:
        await admin.close()
    members = [m["member_id"] for m in described["members"]]
    return members if described["state"] == "Stable" and len(members) == expected else None


async def _wait_offsets_at_end(redis: Redis, settings: CommonSettings, group: str, total: int) -> dict[int, int]:
    """partition -> records processed (stored offset + 1), once they add up to `total`."""

    async def at_end() -> dict[int, int] | None:
        stored = await redis.hgetall(settings.keys.offsets(group))
        done = {int(tp.rsplit("/", 1)[1]): int(offset) + 1 for tp, offset in stored.items()
                if tp.rsplit("/", 1)[0] == settings.events_topic}
        return done if sum(done.values()) >= total else None

    return await wait_until(at_end, 60, "every partition's stored offset at its end")
