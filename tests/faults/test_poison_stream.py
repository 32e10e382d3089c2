"""A live scorer (Faust worker on the real broker and Redis) with poison records mid-stream: every
other record is counted exactly, each poison one lands in the dead-letter topic with its reason,
and /healthz tells the truth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from fatigue.embedded import free_port
from services.deadletter import decode_dead_letter
from services.kafka import make_producer
from services.settings import CommonSettings
from tests.helpers import (
    FAST_GROUP_ENV,
    event,
    produce_events,
    service_process,
    stored_snapshot,
    stored_snapshots,
    wait_until,
)

pytestmark = pytest.mark.integration

POISON = {
    "year 0": {"v": 1, "producer": "raw", "received_at": "2026-11-30T00:00:00Z", "event": {
        "event_id": "p1", "type": "touch", "customer_id": "victim", "channel": "email",
        "occurred_at": "0001-01-01T00:00:00+14:00"}},
    "deep attributes": {"v": 1, "producer": "raw", "received_at": "2026-11-30T00:00:00Z", "event": {
        "event_id": "p2", "type": "touch", "customer_id": "victim", "channel": "email",
        "occurred_at": "2026-11-29T00:00:00Z", "attributes": json.loads('{"a":' * 200 + "1" + "}" * 200)}},
}


async def produce_raw(settings: CommonSettings, values: list[bytes]) -> None:
    producer = make_producer(settings, "poison")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.events_topic, key=b"victim", value=value)
    finally:
        await producer.stop()


async def dead_letters(settings: CommonSettings, expected: int) -> list:
    consumer = AIOKafkaConsumer(settings.dead_letter_topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: list = []
    try:
        async def more() -> list | None:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(decode_dead_letter(r.value) for records in batch.values() for r in records)
            return found if len(found) >= expected else None

        await wait_until(more, 60, f"{expected} dead letters")
    finally:
        await consumer.stop()
    return found


async def test_poison_records_mid_stream_are_dead_lettered_and_the_rest_counted(
    common_settings: CommonSettings, redis_client: Redis, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    customers = [f"cust-{i}" for i in range(6)]
    before = [event(f"a{n}", c, days_ago=3 - n * 0.1) for n in range(4) for c in customers]
    after = [event(f"b{n}", c, days_ago=1 - n * 0.1) for n in range(3) for c in customers]
    await produce_events(common_settings, before)
    poison_values = [json.dumps(p).encode() for p in POISON.values()] + [b"\xff not json at all"]
    await produce_raw(common_settings, poison_values)
    await produce_events(common_settings, after)
    port = free_port()
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
           "FATIGUE_WEB_PORT": str(port), "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    with service_process("scorer", env, tmp_path):
        async def all_counted() -> bool:
            found = await stored_snapshots(redis_client, common_settings, customers)
            return len(found) == len(customers) and all(s["events_counted"] == 7 for s in found.values())

        await wait_until(all_counted, 90, "every healthy customer's 7 events counted")
        letters = await dead_letters(common_settings, expected=3)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        await asyncio.sleep(0.5)
    assert sorted(letter.value for letter in letters) == sorted(poison_values)
    assert {letter.stage for letter in letters} == {"scorer.decode"}
    assert all(letter.key == b"victim" and letter.error_message for letter in letters)
    assert any("out of range" in letter.error_message or "supported range" in letter.error_message
               for letter in letters)
    assert await stored_snapshot(redis_client, common_settings, "victim") is None
    assert health.status_code == 200 and health.json()["agent"] == "running"
    assert 'fatigue_scorer_dead_letters_total{stage="scorer.decode"} 3.0' in metrics
