"""The Faust worker (`fatigue scorer`) on the real embedded broker and Redis."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from services.settings import CommonSettings
from tests.helpers import (
    FAST_GROUP_ENV,
    event,
    over_contacted,
    produce_events,
    service_process,
    stored_snapshot,
    stored_snapshots,
    wait_until,
)

pytestmark = pytest.mark.integration


def scorer_env(infra_env: dict[str, str], unique: str, tmp_path: Path) -> dict[str, str]:
    return {
        **infra_env,
        **FAST_GROUP_ENV,
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_WEB_PORT": "0",
        "FATIGUE_DATA_DIR": str(tmp_path / "scorer"),
    }


async def read_actions(settings: CommonSettings, expected: int, timeout_s: float = 30) -> list[dict]:
    consumer = AIOKafkaConsumer(
        settings.actions_topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict] = []
    try:
        async def more() -> list[dict] | None:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(json.loads(r.value) for records in batch.values() for r in records)
            return found if len(found) >= expected else None

        await wait_until(more, timeout_s, f"{expected} actions")
    finally:
        await consumer.stop()
    return found


async def test_thirteen_touches_throttle_once(
    common_settings: CommonSettings, redis_client: Redis, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    events = over_contacted("cust-13")
    await produce_events(common_settings, events)
    with service_process("scorer", scorer_env(infra_env, unique, tmp_path), tmp_path):
        async def throttled() -> dict | None:
            snap = await stored_snapshot(redis_client, common_settings, "cust-13")
            return snap if snap and snap["status"] == "throttled" else None

        snap = await wait_until(throttled, 60, "customer throttled in the snapshot")
        actions = await read_actions(common_settings, 1)
    assert snap["windows"]["30d"]["touches"]["total"] == 13
    assert [a["type"] for a in actions] == ["fatigue.throttle"]
    assert actions[0]["reasons"][0] == {"rule": "frequency_cap", "window": "30d", "observed": 13, "threshold": 12}


async def test_sigkill_and_restart_neither_loses_nor_double_counts(
    common_settings: CommonSettings, redis_client: Redis, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    env = scorer_env(infra_env, unique, tmp_path)
    customers = [f"k{n}" for n in range(40)]
    # 20 touches per customer over the last 5 days, in order: all inside the grace period.
    first = [event(i, c, days_ago=(19 - i) / 4) for c in customers for i in range(10)]
    second = [event(i, c, days_ago=(19 - i) / 4) for c in customers for i in range(10, 20)]

    async def total_counted() -> int:
        found = await stored_snapshots(redis_client, common_settings, customers)
        return sum(snap["events_counted"] for snap in found.values())

    await produce_events(common_settings, first)
    with service_process("scorer", env, tmp_path) as proc:
        await wait_until(lambda: _at_least(total_counted, 200), 60, "the first events processed")
        await produce_events(common_settings, second)  # arrives while the worker dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with service_process("scorer", env, tmp_path):
        await wait_until(lambda: _at_least(total_counted, 800), 90, "all 800 events processed after restart")
        await produce_events(common_settings, first[:50])  # duplicates by event id, new offsets
        await wait_until(lambda: _redis_offsets_cover(redis_client, common_settings, unique), 30, "offsets")
    assert await total_counted() == 800


async def _at_least(count, n: int) -> int | None:
    value = await count()
    return value if value >= n else None


async def _redis_offsets_cover(redis: Redis, settings: CommonSettings, unique: str) -> bool:
    """The offsets stored with the partitions' states cover every record produced."""
    total = 0
    for partition in range(settings.partitions):
        stored = await redis.hget(settings.keys.partition(partition).offsets(), settings.events_topic)
        total += 0 if stored is None else int(stored) + 1
    return total >= 850
