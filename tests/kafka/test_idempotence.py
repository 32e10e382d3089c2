"""The idempotent producer on Apache Kafka: a batch retried after a lost acknowledgement is stored once.

Every producer of the services is built by `services.kafka.make_producer` (acks=all,
`enable_idempotence` = FATIGUE_KAFKA_IDEMPOTENCE), under two wrappers: `ingest.publisher.EventPublisher`
(the API's events and profiles, `fatigue intake`, `fatigue import`) and `services.kafka.AckedProducer`
(the scorer's actions, every dead-letter sink). Here a broker of its own sits behind a proxy that
loses the response to one Produce request after the broker wrote the records (tests/kafka/proxy.py):
the producer retries the batch on a new connection. With the idempotent producer the broker
recognises the retry (same producer id, epoch and sequence numbers) and stores it once; without it,
the batch is stored twice. Tansu refuses the idempotent producer, so the embedded default keeps it
off (docs/configuration.md).
"""

from __future__ import annotations

import ast
import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fatigue.embedded import free_port
from fatigue.kafka_cluster import KafkaCluster, node_addresses, start_cluster, unavailable_reason
from ingest.publisher import EventPublisher
from services.kafka import AckedProducer
from services.settings import CommonSettings
from tests.helpers import wait_until
from tests.kafka.proxy import LosingProxy

pytestmark = pytest.mark.apache_kafka

REPO = Path(__file__).resolve().parents[2]
RECORDS = 50


@pytest.fixture(scope="module")
async def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[KafkaCluster, LosingProxy]]:
    """A one-node Apache Kafka whose clients all go through a LosingProxy (it advertises the proxy)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"Apache Kafka tier skipped: {reason}")
    [address] = node_addresses(1)
    proxy = LosingProxy(free_port(), address.port)
    await proxy.start()
    extra = {"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.listen_port}"}
    workdir = Path(tmp_path_factory.mktemp("kafka-behind-proxy"))
    # In a thread: start_cluster waits for the broker through the proxy, which this loop serves.
    cluster = await asyncio.to_thread(start_cluster, workdir, 1, extra=extra, addresses=[address])
    try:
        yield cluster, proxy
    finally:
        await asyncio.to_thread(cluster.stop)
        await proxy.close()


def _settings(cluster: KafkaCluster, idempotence: bool) -> CommonSettings:
    return CommonSettings(kafka_bootstrap_servers=cluster.bootstrap_servers, kafka_idempotence=idempotence,
                          kafka_request_timeout_s=20)


async def _through_event_publisher(settings: CommonSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    publisher = EventPublisher(settings, client_id="test-idempotence")
    try:
        await publisher.publish_many(topic, records)
    finally:
        await publisher.close()


async def _through_acked_producer(settings: CommonSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AckedProducer(settings, "test-idempotence", "test")
    try:
        await producer.send_all(topic, list(records))
    finally:
        await producer.close()


PATHS: dict[str, Callable[[CommonSettings, str, list[tuple[bytes, bytes]]], Awaitable[None]]] = {
    "EventPublisher (API, intake, import)": _through_event_publisher,
    "AckedProducer (actions, dead letters)": _through_acked_producer,
}


async def _stored(cluster: KafkaCluster, topic: str) -> Counter[bytes]:
    """How many times each value is on the (one-partition) topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: Counter[bytes] = Counter()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]

        async def read() -> bool:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.update(r.value for r in records if r.value is not None)
            return await consumer.position(tp) >= end

        await wait_until(read, 30, f"{end} records read")
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("idempotence", [True, False], ids=["idempotent", "not-idempotent"])
@pytest.mark.parametrize("path", sorted(PATHS))
async def test_a_batch_retried_after_a_lost_acknowledgement_is_stored_once_only_when_idempotent(
    behind_proxy: tuple[KafkaCluster, LosingProxy], path: str, idempotence: bool, unique: str
) -> None:
    cluster, proxy = behind_proxy
    topic = f"i{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    records = [(b"customer", f"record-{n}".encode()) for n in range(RECORDS)]
    proxy.lost = 0
    proxy.lose_produce_responses(1)
    await PATHS[path](_settings(cluster, idempotence), topic, records)  # acknowledged: no error
    assert proxy.lost == 1, "no produce response was lost: the retry did not happen"

    stored = await _stored(cluster, topic)
    assert set(stored) == {value for _, value in records}
    repeated = sum(count - 1 for count in stored.values())
    if idempotence:
        assert repeated == 0, f"{repeated} records stored twice although the producer is idempotent"
    else:
        assert repeated > 0, "without idempotence the retried batch was expected twice on the log"


def test_every_producer_of_the_services_is_built_by_make_producer() -> None:
    """So FATIGUE_KAFKA_IDEMPOTENCE reaches every path (the benchmark's own producers are not services)."""
    builders = []
    for package in ("services", "ingest", "scorer", "notifier", "fatigue"):
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            builders += [f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree)
                         if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))
                         == "AIOKafkaProducer"]
    assert [b.split(":")[0] for b in builders] == ["services/kafka.py"], builders
