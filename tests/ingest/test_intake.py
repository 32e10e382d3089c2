"""The Kafka intake consumer with an independent producer (confluent-kafka / librdkafka): valid
events forwarded once through the accept path, invalid records on the dead-letter topic with the
reason, offsets committed only after the forward; a record the brokers refuse never stops it, a
configuration error never spins."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ingest.accept import AcceptPath
from ingest.dedup import DedupStore
from ingest.intake import IntakeWorker, make_consumer, run
from ingest.publisher import EventPublisher
from services import deadletter, errors
from services.deadletter import KafkaDeadLetterSink
from services.metrics import IntakeMetrics
from services.redisio import make_redis
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
    assert counted == {"accepted": 7.0, "duplicate": 1.0, "invalid": 3.0, "refused": 0.0}
    # monitored like the other consumers (issue 17, finding 10): the dead-letter alerts and the lag panels see it
    dead = {s.labels["stage"]: s.value for m in registry.collect() for s in m.samples
            if s.name == "fatigue_intake_dead_letters_total"}
    assert dead == {"intake.validate": 3.0, "intake.forward": 0.0}
    assert set(lag) == {(settings.intake_topic, str(p)) for p in range(settings.partitions)}


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for m in registry.collect() for s in m.samples if s.name == name}


async def until_committed(settings: IntakeSettings, count: int) -> int:
    for _ in range(100):
        if (done := await committed(settings)) == count:
            return done
        await asyncio.sleep(0.2)
    return await committed(settings)


async def test_an_oversized_invalid_record_is_dead_lettered_once_and_the_stream_goes_on(
        common_settings: CommonSettings, unique: str) -> None:
    """Issue 17 #1. A ~900 KB invalid record (under Kafka's 1 MiB) among 10 good ones and 7 other invalid
    ones, all on one partition, in order. Its letter was 1.2 MB, the producer refused it
    (MessageSizeTooLargeError), that was taken for an outage: the batch was retried forever, nothing
    after it forwarded, and every retry sent the batch's other letters again.

    The limit is set here on the producer under test: FATIGUE_KAFKA_MAX_REQUEST_BYTES = 1 MiB (Kafka's
    default), aiokafka's `max_request_size`, which it checks before sending. The embedded Tansu broker
    does not enforce `max.message.bytes` (tried: a topic created with 1000 took a 5,000-byte record)."""
    settings = intake_settings(common_settings, unique).model_copy(update={"kafka_max_request_bytes": 1_048_576})
    huge = b'{"event_id": "huge", "note": "' + b"x" * 900_000 + b'"}'
    bad = [json.dumps(event(20, channel="fax")).encode(), b"{not json", json.dumps([event(21)]).encode(),
           b"null", json.dumps(event(22, type="nope")).encode(), json.dumps(event(23, customer_id="")).encode(),
           b"\xff\xfe"]
    values = [json.dumps(event(i)).encode() for i in range(3)] + bad[:3] + [huge] + bad[3:]
    values += [json.dumps(event(i)).encode() for i in range(3, 10)]
    await asyncio.to_thread(produce, common_settings, [("cust-0", value, []) for value in values])

    stop = asyncio.Event()
    registry = CollectorRegistry()
    task = asyncio.create_task(run(settings, stop, registry))
    try:
        forwarded = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=10, timeout_s=40)
        letters = await consume(settings.kafka_bootstrap_servers, settings.dead_letter_topic, expected=8,
                                timeout_s=20, settle_s=3)
        done = await until_committed(settings, len(values))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert sorted(value_of(r)["event"]["event_id"] for r in forwarded) == sorted(f"k-{i}" for i in range(10))
    assert len(letters) == 8  # each letter sent exactly once
    assert sorted(value_of(r)["source"]["offset"] for r in letters) == [3, 4, 5, 6, 7, 8, 9, 10]
    [big] = [value_of(r) for r in letters if value_of(r)["source"]["offset"] == 6]
    assert big["truncated"] is True and big["stage"] == "intake.validate"
    assert (big["value_size"], big["value_sha256"]) == (len(huge), hashlib.sha256(huge).hexdigest())
    assert base64.b64decode(big["value_b64"]) == huge[:deadletter.MAX_VALUE_BYTES]
    assert all(len(r.value) <= deadletter.MAX_LETTER_BYTES for r in letters)
    assert done == len(values)
    assert samples(registry, "fatigue_intake_retries_total") == {("broker_unavailable",): 0.0, ("in_flight",): 0.0}
    counted = samples(registry, "fatigue_intake_records_total")
    assert counted == {("accepted",): 10.0, ("duplicate",): 0.0, ("invalid",): 8.0, ("refused",): 0.0}


async def test_a_valid_event_the_events_topic_refuses_is_dead_lettered_not_retried(
        common_settings: CommonSettings, unique: str) -> None:
    """A topic whose limit is below an event's envelope (here FATIGUE_KAFKA_MAX_REQUEST_BYTES = 4096, the
    producer's check: see the test above). The event is dead-lettered (stage intake.forward) with the
    reason; its letter, over the limit too, goes without its value but with its size and SHA-256."""
    settings = intake_settings(common_settings, unique).model_copy(update={"kafka_max_request_bytes": 4096})
    large = json.dumps(event(1, attributes={"notes": "n" * 6000})).encode()
    values = [json.dumps(event(0)).encode(), large, json.dumps(event(2)).encode()]
    await asyncio.to_thread(produce, common_settings, [("cust-0", value, []) for value in values])

    stop = asyncio.Event()
    registry = CollectorRegistry()
    task = asyncio.create_task(run(settings, stop, registry))
    try:
        forwarded = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=2, timeout_s=40)
        letters = await consume(settings.kafka_bootstrap_servers, settings.dead_letter_topic, expected=1,
                                timeout_s=20, settle_s=2)
        done = await until_committed(settings, len(values))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert sorted(value_of(r)["event"]["event_id"] for r in forwarded) == ["k-0", "k-2"]
    [letter] = [value_of(r) for r in letters]
    assert letter["stage"] == "intake.forward" and letter["source"]["offset"] == 1
    assert "4,096" in letter["error"]["message"] and letter["error"]["class"] == "RecordRefused"
    assert letter["truncated"] is True and letter["value_b64"] == ""
    assert (letter["value_size"], letter["value_sha256"]) == (len(large), hashlib.sha256(large).hexdigest())
    assert done == len(values)
    assert samples(registry, "fatigue_intake_retries_total")[("broker_unavailable",)] == 0.0
    assert samples(registry, "fatigue_intake_records_total")[("refused",)] == 1.0
    refused = samples(registry, "fatigue_records_refused_total")
    assert refused[("intake.forward", "too_large")] == 1.0 and refused[("intake.dead_letter", "too_large")] == 1.0


async def test_a_topic_the_brokers_refuse_stops_the_intake_instead_of_spinning(
        common_settings: CommonSettings, unique: str, redis_client: Redis) -> None:
    """A configuration error (here: an events topic the brokers do not know) is neither retried in
    place as an outage nor blamed on the record: the worker stops with BrokerMisconfigured (`fatigue
    intake` exits 1 with the operator action; its supervisor restarts it)."""
    settings = intake_settings(common_settings, unique).model_copy(update={"kafka_request_timeout_s": 2.0})
    await asyncio.to_thread(produce, common_settings, [("cust-0", json.dumps(event(0)).encode(), [])])
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)
    publisher = EventPublisher(settings, client_id="test-intake")
    dead_letters = KafkaDeadLetterSink(settings, client_id="test-intake")
    redis = make_redis(settings)
    accept = AcceptPath(publisher, DedupStore(redis, settings.keys, settings.dedup_ttl_s), topic="not a topic!",
                        max_future_skew_s=300, claim_wait_s=3)
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        with pytest.raises(errors.FatigueError, match="UnknownTopicOrPartition") as stopped:
            await asyncio.wait_for(IntakeWorker(consumer, accept, dead_letters, settings, metrics)
                                   .run(asyncio.Event()), 40)
    finally:
        await consumer.stop()
        await dead_letters.close()
        await publisher.close()
        await redis.aclose()
    assert type(stopped.value).__name__ == "BrokerMisconfigured" and not stopped.value.retriable
    assert samples(registry, "fatigue_intake_retries_total")[("broker_unavailable",)] == 0.0
    assert await committed(settings) == 0
    assert await redis_client.keys(f"{settings.redis_prefix}*") == []  # no claim left behind
