"""Kafka plumbing shared by the services: producers with acks=all, topic creation."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.errors import BrokerUnavailable
from services.settings import CommonSettings

log = logging.getLogger(__name__)


def make_producer(settings: CommonSettings, client_id: str) -> AIOKafkaProducer:
    """A producer that only reports success once all in-sync replicas have the record."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
        linger_ms=2,
    )


def topic_specs(settings: CommonSettings) -> list[NewTopic]:
    """The three topics, all with the same partition count so a customer's records co-locate."""
    common = {"num_partitions": settings.partitions, "replication_factor": settings.replication_factor}
    # acks=all only means "more than one copy" when at least two replicas must be in sync.
    durable = {"min.insync.replicas": "2"} if settings.replication_factor >= 2 else {}
    return [
        NewTopic(settings.events_topic, topic_configs=dict(durable), **common),
        NewTopic(settings.profiles_topic, topic_configs={"cleanup.policy": "compact", **durable}, **common),
        NewTopic(settings.actions_topic, topic_configs=dict(durable), **common),
    ]


async def ensure_topics(settings: CommonSettings) -> list[str]:
    """Create missing topics; return the names created. Raises BrokerUnavailable."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        return [spec.name for spec in missing]
    finally:
        await admin.close()
