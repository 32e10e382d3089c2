"""Readiness reflects Kafka, Redis and the partition count; liveness does not depend on them."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from ingest.partition_check import PartitionCountCheck
from services.settings import CommonSettings
from tests.ingest.helpers import closed_port_address, ingest_settings_for, running_api

pytestmark = pytest.mark.integration


async def test_ready_when_both_answer(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings)) as api:
        api.headers.pop("Authorization")
        response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"kafka": "ok", "redis": "ok", "partitions": "ok"}}


@pytest.mark.parametrize("broken", ["kafka", "redis", "both"])
async def test_not_ready_names_what_failed(common_settings: CommonSettings, broken: str) -> None:
    overrides = {}
    if broken in ("kafka", "both"):
        overrides["kafka_bootstrap_servers"] = closed_port_address()
    if broken in ("redis", "both"):
        overrides["redis_url"] = f"redis://{closed_port_address()}/0"
    async with running_api(ingest_settings_for(common_settings, **overrides)) as api:
        ready = await api.get("/readyz")
        alive = await api.get("/healthz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    failed = {name for name, result in ready.json()["checks"].items() if result != "ok"}
    assert failed == ({"kafka", "redis"} if broken == "both" else {broken})
    assert all(r.startswith("error: ") for n, r in ready.json()["checks"].items() if n in failed)
    assert alive.status_code == 200


async def test_not_ready_when_the_state_is_written_for_another_partition_count(
        common_settings: CommonSettings, redis_client: Redis) -> None:
    """`fatigue repartition` ran while this API kept running on the old FATIGUE_PARTITIONS: it would look
    for customers in the wrong partitions, so it says so until restarted with the recorded count."""
    async with running_api(ingest_settings_for(common_settings)) as api:  # records 3
        await redis_client.hset(common_settings.keys.meta(), "partitions", "6")
        ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "kafka": "ok", "redis": "ok",
        "partitions": "error: FATIGUE_PARTITIONS=3, but the state in Redis is written for 6 partitions: restart the "
                      "API with FATIGUE_PARTITIONS=6"}


async def test_the_partition_check_is_cached_and_names_a_repartition_in_progress(
        common_settings: CommonSettings, redis_client: Redis) -> None:
    now = [0.0]
    check = PartitionCountCheck(redis_client, common_settings.keys, 3, ttl_s=5, clock=lambda: now[0])
    assert await check.check(2.0) == "ok"  # nothing recorded yet: the first service to start records it
    await redis_client.hset(common_settings.keys.meta(), mapping={"partitions": "3", "repartition": "6"})
    now[0] = 4.9
    assert await check.check(2.0) == "ok"  # one HMGET per TTL, not one per probe
    now[0] = 5.0
    assert await check.check(2.0) == ("error: a re-partition to 6 partitions is in progress (`fatigue repartition "
                                      "--partitions 6`); then restart with FATIGUE_PARTITIONS=6")
