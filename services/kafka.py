"""Kafka plumbing shared by the services: how clients connect (TLS, SASL), producers with
acks=all, topic creation."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.errors import BrokerUnavailable, ConfigError
from services.settings import KAFKA_SASL_PROTOCOLS, KAFKA_TLS_PROTOCOLS, CommonSettings

log = logging.getLogger(__name__)


def kafka_security_kwargs(settings: CommonSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for FATIGUE_KAFKA_SECURITY_PROTOCOL and its companions.

    Every Kafka client of the services is built with these (producers, consumers, the admin
    client; the scorer's Faust app through `scorer.transport.faust_credentials`). PLAINTEXT gives
    only `security_protocol`; SSL and SASL_SSL add `ssl_context` (`kafka_ssl_context`); SASL_*
    add `sasl_mechanism`, `sasl_plain_username` and `sasl_plain_password` (aiokafka uses the
    latter two for SCRAM as well). The result holds the password in clear: never log it.
    Raises ConfigError when the CA, certificate or key files cannot be loaded.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol in KAFKA_TLS_PROTOCOLS:
        kwargs["ssl_context"] = kafka_ssl_context(settings)
    if protocol in KAFKA_SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None  # CommonSettings refuses SASL without one
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def kafka_ssl_context(settings: CommonSettings) -> ssl.SSLContext:
    """TLS as aiokafka's `create_ssl_context` builds it: the broker's certificate and host name are
    always verified (against FATIGUE_KAFKA_SSL_CAFILE, else the system's CAs); a client certificate
    is presented when FATIGUE_KAFKA_SSL_CERTFILE / _KEYFILE are set (mutual TLS)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"FATIGUE_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}: no usable PEM CA ({exc})") from exc
    if settings.kafka_ssl_certfile is not None:
        _load_client_certificate(context, settings.kafka_ssl_certfile, settings)
    return context


def _load_client_certificate(context: ssl.SSLContext, certfile: Path, settings: CommonSettings) -> None:
    keyfile, password = settings.kafka_ssl_keyfile, settings.kafka_ssl_key_password
    try:
        # A callable, so an encrypted key without a password fails here instead of prompting on a TTY.
        context.load_cert_chain(
            certfile, keyfile, password=password.get_secret_value if password is not None else _no_key_password
        )
    except OSError as exc:  # ssl.SSLError included; the message never holds the password
        raise ConfigError(
            f"FATIGUE_KAFKA_SSL_CERTFILE={certfile} / FATIGUE_KAFKA_SSL_KEYFILE={keyfile}: cannot load the "
            f"client certificate and key: not a matching PEM pair, or a wrong FATIGUE_KAFKA_SSL_KEY_PASSWORD ({exc})"
        ) from exc


def _no_key_password() -> NoReturn:
    raise ConfigError(
        "FATIGUE_KAFKA_SSL_KEYFILE is encrypted: set FATIGUE_KAFKA_SSL_KEY_PASSWORD (or use an unencrypted key)"
    )


def make_producer(settings: CommonSettings, client_id: str) -> AIOKafkaProducer:
    """A producer that only reports success once all in-sync replicas have the record."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
        linger_ms=2,
        **kafka_security_kwargs(settings),
    )


class AckedProducer:
    """A producer started on first use (and again after a failed start) whose `send_all` returns only
    once the brokers acknowledged every record (acks=all). What the scorer's action publisher and
    every dead-letter sink write through."""

    def __init__(self, settings: CommonSettings, client_id: str, what: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._what = what
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(self._settings, client_id=self._client_id)
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise BrokerUnavailable(f"cannot start the {self._what} producer: {exc}") from exc
            self._producer = producer
        return self._producer

    async def send_all(self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """(key, value) records to `topic`; BrokerUnavailable unless all were acknowledged in time."""
        if not records:
            return
        producer = await self._started()
        try:
            futures = [await producer.send(topic, key=key, value=value) for key, value in records]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.kafka_request_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"{self._what} records were not acknowledged by the broker: {exc!r}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


EVENTS_RETENTION_MS = 97 * 24 * 3600 * 1000
"""How long the events topic keeps events: the packaged policy's longest window (90 d) plus its grace
(7 d), so the scorer's state can be rebuilt from the log. Without it the broker's default applies
(Apache Kafka: 7 days). A policy with longer windows needs it raised on the topic."""


def topic_specs(settings: CommonSettings) -> list[NewTopic]:
    """The topics, all with the same partition count so a customer's records co-locate."""
    common = {"num_partitions": settings.partitions, "replication_factor": settings.replication_factor}
    # acks=all only means "more than one copy" when at least two replicas must be in sync.
    durable = {"min.insync.replicas": "2"} if settings.replication_factor >= 2 else {}
    return [
        NewTopic(settings.events_topic, topic_configs={"retention.ms": str(EVENTS_RETENTION_MS), **durable}, **common),
        NewTopic(settings.profiles_topic, topic_configs={"cleanup.policy": "compact", **durable}, **common),
        NewTopic(settings.actions_topic, topic_configs=dict(durable), **common),
        NewTopic(settings.dead_letter_topic, topic_configs=dict(durable), **common),
        NewTopic(settings.intake_topic, topic_configs=dict(durable), **common),
    ]


async def ensure_topics(settings: CommonSettings) -> list[str]:
    """Create missing topics; return the names created. Raises BrokerUnavailable."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
        **kafka_security_kwargs(settings),
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
