"""Topic specs; producers that report per record (acknowledged, refused, or an outage / config error)."""

from __future__ import annotations

import pytest

from services import errors
from services.kafka import AckedProducer, topic_specs
from services.settings import CommonSettings
from tests.ingest.helpers import consume


@pytest.mark.parametrize(("replication", "min_isr"), [(1, None), (3, "2")])
def test_topics_are_co_partitioned_and_durable_when_replicated(replication: int, min_isr: str | None) -> None:
    settings = CommonSettings.from_env({"FATIGUE_PARTITIONS": "12", "FATIGUE_REPLICATION_FACTOR": str(replication)})
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert set(specs) == {"fatigue.events.v1", "fatigue.profiles.v1", "fatigue.actions.v1", "fatigue.deadletter.v1",
                          "fatigue.intake.v1"}
    assert {spec.num_partitions for spec in specs.values()} == {12}
    assert specs["fatigue.profiles.v1"].topic_configs["cleanup.policy"] == "compact"
    assert {spec.topic_configs.get("min.insync.replicas") for spec in specs.values()} == {min_isr}


# ---- AckedProducer against the real broker: per-record outcomes (issue 17 #1) ----


@pytest.mark.integration
async def test_a_record_over_the_limit_is_refused_alone_and_the_others_are_stored(
        common_settings: CommonSettings) -> None:
    """The limit is set by the test on the producer (FATIGUE_KAFKA_MAX_REQUEST_BYTES = Kafka's default
    1 MiB, aiokafka's `max_request_size`, checked before sending): the embedded Tansu broker enforces
    no `max.message.bytes` (tried: a topic created with 1000 took a 5,000-byte record, and a 20 MB
    record was stored). The same code meets the broker's own refusal (errno 10) on Apache Kafka."""
    settings = common_settings.model_copy(update={"kafka_max_request_bytes": 1_048_576})
    topic = settings.actions_topic
    producer = AckedProducer(settings, "test-limit", "test")
    try:
        refused = await producer.send_all(topic, [(b"k", b"small-0"), (b"k", b"x" * 1_200_000), (b"k", b"small-2")])
    finally:
        await producer.close()
    assert list(refused) == [1]
    assert refused[1].reason == "too_large" and "1,048,576" in str(refused[1])
    stored = await consume(settings.kafka_bootstrap_servers, topic, expected=2)
    assert sorted(r.value for r in stored) == [b"small-0", b"small-2"]


@pytest.mark.integration
async def test_records_acknowledged_before_are_not_sent_again(common_settings: CommonSettings) -> None:
    """What a caller retrying after an outage relies on: the same records again send only the rest."""
    topic = common_settings.actions_topic
    producer = AckedProducer(common_settings, "test-ids", "test")
    try:
        await producer.send_all(topic, [(b"k", b"a"), (b"k", b"b")], ids=["a", "b"])
        await producer.send_all(topic, [(b"k", b"a"), (b"k", b"b"), (b"k", b"c")], ids=["a", "b", "c"])
    finally:
        await producer.close()
    stored = await consume(common_settings.kafka_bootstrap_servers, topic, expected=3)
    assert sorted(r.value for r in stored) == [b"a", b"b", b"c"]


@pytest.mark.integration
async def test_a_topic_the_brokers_refuse_is_a_configuration_error_not_an_outage(
        common_settings: CommonSettings) -> None:
    """aiokafka waits `request_timeout_ms` for a topic's metadata, then raises UnknownTopicOrPartition:
    retrying in place would spin forever, blaming the record would dead-letter good data."""
    settings = common_settings.model_copy(update={"kafka_request_timeout_s": 2.0})
    producer = AckedProducer(settings, "test-config", "test")
    try:
        with pytest.raises(errors.FatigueError, match="UnknownTopicOrPartitionError") as raised:
            await producer.send_all("not a valid topic!", [(b"k", b"v")])
    finally:
        await producer.close()
    assert type(raised.value).__name__ == "BrokerMisconfigured" and not raised.value.retriable
