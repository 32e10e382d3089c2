"""EventPublisher against the real broker: acknowledged writes, a clear error when it is down, recovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fatigue.embedded import free_port, start_kafka
from ingest.publisher import EventPublisher
from services.errors import BrokerUnavailable
from services.kafka import ensure_topics
from services.settings import CommonSettings
from tests.ingest.helpers import consume

pytestmark = pytest.mark.integration


async def test_publish_many_returns_after_every_record_is_stored(common_settings: CommonSettings) -> None:
    publisher = EventPublisher(common_settings)
    records = [(f"c{i % 4}".encode(), f"v{i}".encode()) for i in range(50)]
    try:
        await publisher.publish_many(common_settings.events_topic, records)
    finally:
        await publisher.close()
    stored = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic, expected=50)
    assert sorted((r.key, r.value) for r in stored) == sorted(records)
    by_key: dict[bytes, set[int]] = {}
    for record in stored:
        by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values())  # keyed: one partition per customer


async def test_broker_down_raises_broker_unavailable_quickly(common_settings: CommonSettings) -> None:
    settings = common_settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "kafka_request_timeout_s": 3.0}
    )
    publisher = EventPublisher(settings)
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable, match="cannot reach Kafka"):
            await publisher.publish_many(settings.events_topic, [(b"k", b"v")])
        with pytest.raises(BrokerUnavailable):
            await publisher.ping(1.0)
    finally:
        await publisher.close()
    assert time.monotonic() - started < 8


async def test_recovers_when_the_broker_comes_up_later(common_settings: CommonSettings, tmp_path: Path) -> None:
    port = free_port()
    settings = common_settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{port}", "kafka_request_timeout_s": 5.0}
    )
    publisher = EventPublisher(settings)
    try:
        with pytest.raises(BrokerUnavailable):
            await publisher.publish_many(settings.events_topic, [(b"k", b"lost")])
        broker = start_kafka(tmp_path, port)
        try:
            await ensure_topics(settings)
            await publisher.publish_many(settings.events_topic, [(b"k", b"stored")])
            await publisher.ping(2.0)
            stored = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=1)
        finally:
            await publisher.close()
            broker.stop()
    finally:
        await publisher.close()
    assert [r.value for r in stored] == [b"stored"]
