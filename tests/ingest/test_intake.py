"""The Kafka intake consumer with an independent producer (confluent-kafka / librdkafka): valid
events forwarded once through the accept path, invalid records on the dead-letter topic with the
reason, offsets committed only after the forward."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from ingest.intake import run
from services.settings import CommonSettings, IntakeSettings
from tests.helpers import FAST_GROUP_ENV, wait_until
from tests.ingest.helpers import consume, value_of

pytestmark = pytest.mark.integration


def intake_settings(common: CommonSettings, unique: str) -> IntakeSettings:
    fast = {k.removeprefix("FATIGUE_").lower(): v for k, v in FAST_GROUP_ENV.items() if "BROKER" in k or "FETCH" in k}
    return IntakeSettings(**{**common.model_dump(), **fast}, intake_group_id=f"intake-{unique}", retry_backoff_s=0.2)


def event(i: int, **overrides: object) -> dict:
    at = datetime.now(UTC) - timedelta(hours=i)
    return {"event_id": f"k-{i}", "type": "touch", "customer_id": f"cust-{i % 3}", "channel": "email",
            "occurred_at": at.isoformat(), **overrides}


def produce(settings: CommonSettings, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []
    for key, value, headers in records:
        producer.produce(settings.intake_topic, key=key.encode(), value=value, headers=headers,
                         on_delivery=lambda err, _msg: failures.append(str(err)) if err else None)
    assert producer.flush(20) == 0 and failures == []


async def intake_lag(registry: CollectorRegistry, group: str) -> dict[tuple[str, str], float]:
    """(topic, partition) -> lag of the intake's consumer group, once every partition is reported."""
    lag = {(s.labels["topic"], s.labels["partition"]): s.value for m in registry.collect() for s in m.samples
           if s.name == "fatigue_consumer_lag_records" and s.labels["group"] == group}
    assigned = [s.value for m in registry.collect() for s in m.samples
                if s.name == "fatigue_consumer_assigned_partitions" and s.labels["group"] == group]
    return lag if assigned and len(lag) == assigned[0] > 0 else {}


async def committed(settings: IntakeSettings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.intake_group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.intake_topic, p) for p in range(settings.partitions)]
        return sum([(await consumer.committed(tp)) or 0 for tp in parts])
    finally:
        await consumer.stop()


async def test_librdkafka_producer_valid_forwarded_once_invalid_dead_lettered(
        common_settings: CommonSettings, unique: str) -> None:
    settings = intake_settings(common_settings, unique)
    valid = [event(i) for i in range(6)]
    records = [(e["customer_id"], json.dumps(e).encode(), []) for e in valid]
    records.append(("cust-0", json.dumps(valid[0]).encode(), []))  # the same event twice: stored once
    records.append(("cust-0", json.dumps(valid[1]).encode(), [("producer", b"erp")]))  # another producer's id
    records.append(("cust-1", json.dumps(event(9, channel="fax")).encode(), []))
    records.append(("cust-2", b"{not json", []))
    records.append(("cust-2", json.dumps([event(10)]).encode(), []))
    await asyncio.to_thread(produce, common_settings, records)

    stop = asyncio.Event()
    registry = CollectorRegistry()
    task = asyncio.create_task(run(settings, stop, registry))
    try:
        forwarded = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=7, timeout_s=40)
        letters = await consume(settings.kafka_bootstrap_servers, settings.dead_letter_topic, expected=3,
                                timeout_s=20)
        for _ in range(100):
            if await committed(settings) == len(records):
                break
            await asyncio.sleep(0.2)
        lag = await wait_until(lambda: intake_lag(registry, settings.intake_group_id), 30, "the intake's lag series")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    envelopes = [value_of(r) for r in forwarded]
    assert sorted((e["producer"], e["event"]["event_id"]) for e in envelopes) == sorted(
        [("kafka", f"k-{i}") for i in range(6)] + [("erp", "k-1")])
    assert all(r.key.decode() == value_of(r)["event"]["customer_id"] for r in forwarded)  # keyed by customer
    reasons = sorted(value_of(r)["error"]["message"] for r in letters)
    assert len(reasons) == 3 and value_of(letters[0])["stage"] == "intake.validate"
    assert any("channel: 'fax' is not one of" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert any("one event object, not list" in r for r in reasons)
    assert await committed(settings) == len(records)
    counted = {s.labels["outcome"]: s.value for m in registry.collect() for s in m.samples
               if s.name == "fatigue_intake_records_total"}
    assert counted == {"accepted": 7.0, "duplicate": 1.0, "invalid": 3.0}
    # monitored like the other consumers (issue 17, finding 10): the dead-letter alerts and the lag panels see it
    dead = {s.labels["stage"]: s.value for m in registry.collect() for s in m.samples
            if s.name == "fatigue_intake_dead_letters_total"}
    assert dead == {"intake.validate": 3.0}
    assert set(lag) == {(settings.intake_topic, str(p)) for p in range(settings.partitions)}
