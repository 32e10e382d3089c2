"""What the code does "because the embedded broker …", decided on Apache Kafka.

Each workaround is measured on both brokers: what Apache Kafka does (so production needs no
workaround) and that Tansu, which stays the embedded default and the fast test tier, still needs it.
The day Tansu changes, the Tansu half fails and says which workaround can go.

- state in Redis with its offsets, not Faust tables (end_offsets per batch; scorer/store.py): stays
  while Tansu is the default, test_offsets.py;
- consumer lag from the fetch high watermark, not end_offsets (services/lag.py): stays, it costs no
  request and is right on both;
- FATIGUE_FETCH_MAX_WAIT_MS=50 on the embedded broker (a fetch is held though data arrived;
  fatigue/supervisor.py): stays for Tansu only, Apache Kafka answers when data arrives;
- FATIGUE_KAFKA_IDEMPOTENCE=false on the embedded broker (InitProducerId refused): stays for Tansu
  only; on in Compose, k8s and this tier (test_idempotence.py);
- short consumer-group timeouts on the embedded broker (slow joins): stays for Tansu only; the
  production defaults join and score on Apache Kafka.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from fatigue.embedded import EmbeddedStack
from fatigue.kafka_cluster import KafkaCluster
from services.settings import CommonSettings
from tests.helpers import over_contacted, produce_events, service_process, wait_until
from tests.kafka.helpers import stored_snapshots

pytestmark = pytest.mark.apache_kafka

HELD_S = 1.5
"""Longer than this from a record's acknowledgement to a waiting consumer having it: the fetch was
held. Here Apache Kafka answered within milliseconds, Tansu about 2 s later (of a 6 s wait)."""


async def _fetch_wait_s(bootstrap: str, topic: str, wait_ms: int) -> float:
    """Seconds from a record's acknowledgement to a consumer (fetch_max_wait_ms=`wait_ms`) having it;
    the record arrives 1 s into the consumer's first fetch."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])  # the fetcher starts waiting on the empty partition
        fetching = asyncio.ensure_future(consumer.getone())
        await asyncio.sleep(1.0)
        await producer.send_and_wait(topic, b"v")
        sent = time.monotonic()
        await asyncio.wait_for(fetching, wait_ms / 1000 * 3)
        return time.monotonic() - sent
    finally:
        await producer.stop()
        await consumer.stop()


async def test_apache_kafka_answers_a_waiting_fetch_when_data_arrives(kafka_cluster: KafkaCluster, unique: str) -> None:
    waited = await _fetch_wait_s(kafka_cluster.bootstrap_servers, f"k{unique}.wait", 30_000)
    assert waited < 10 * HELD_S, f"{waited:.2f}s: the fetch was held (production would need a short wait too)"


async def test_the_embedded_broker_still_holds_a_fetch_for_its_full_wait(stack: EmbeddedStack, unique: str) -> None:
    waited = await _fetch_wait_s(stack.kafka_bootstrap_servers, f"t{unique}.wait", 6000)
    assert waited > HELD_S, f"{waited:.2f}s: Tansu answers when data arrives now; the 50 ms wait of `up` can go"


async def test_the_embedded_broker_still_refuses_the_idempotent_producer(stack: EmbeddedStack) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers, acks="all", enable_idempotence=True)
    try:
        with pytest.raises(KafkaError):  # InitProducerId answered with UnknownError
            await producer.start()
    finally:
        await producer.stop()


async def test_a_scorer_with_the_production_group_timeouts_joins_and_scores_on_apache_kafka(
    kafka_settings: CommonSettings, kafka_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    """No FATIGUE_BROKER_* or FATIGUE_FETCH_MAX_WAIT_MS: the defaults production runs with."""
    env = {**kafka_env, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    await produce_events(kafka_settings, over_contacted("defaults"))

    async def throttled() -> dict | None:
        snap = (await stored_snapshots(redis_client, kafka_settings, ["defaults"])).get("defaults")
        return snap if snap and snap["status"] == "throttled" else None

    with service_process("scorer", env, tmp_path):
        snap = await wait_until(throttled, 60, "the customer scored by a scorer with default group timeouts")
    assert snap["events_counted"] == 16
