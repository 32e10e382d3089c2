"""Kafka plumbing shared by the services: how clients connect (TLS, SASL), producers with
acks=all that report per record (acknowledged, refused for its own properties, or not sent because
of an outage: services/kafka_errors.py decides which), topic creation."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from services.errors import BrokerMisconfigured, BrokerUnavailable, ConfigError, FatigueError, RecordRefused
from services.kafka_errors import TOO_LARGE, as_fatigue_error
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
    """A producer that only reports success once all in-sync replicas have the record, and refuses
    (MessageSizeTooLargeError, before sending) a record over FATIGUE_KAFKA_MAX_REQUEST_BYTES."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
        max_request_size=settings.kafka_max_request_bytes,
        linger_ms=2,
        **kafka_security_kwargs(settings),
    )


METADATA_GRACE_S = 1.0
Record = tuple[bytes | None, bytes | None]
"""(key, value) of one Kafka record."""


@dataclass(frozen=True, slots=True)
class Placement:
    """How one record is sent beyond its key and value: to an explicit `partition` (None: the
    producer's partitioner, murmur2 of the key), with `headers` and a `timestamp_ms` (None: now)."""

    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


DEFAULT_PLACEMENT = Placement()


@dataclass
class Sent:
    """What became of each record of one `send_each`, by index: acknowledged (`acked`), refused for its
    own properties (`refused`: never send it again), or neither, because of `failure` (an outage or a
    configuration error: those may be sent again once it is over; the acknowledged ones must not be)."""

    acked: set[int] = field(default_factory=set)
    refused: dict[int, RecordRefused] = field(default_factory=dict)
    failure: BrokerUnavailable | BrokerMisconfigured | None = None
    positions: dict[int, int] = field(default_factory=dict)
    """partition -> the highest offset acknowledged there (what a reader must have processed to have
    seen every acknowledged record)."""

    def fail(self, error: FatigueError) -> None:
        """Keep the most telling failure: a configuration error over an outage, else the first."""
        if isinstance(error, BrokerMisconfigured) or self.failure is None:
            assert isinstance(error, BrokerUnavailable | BrokerMisconfigured)
            self.failure = error


async def send_each(producer: AIOKafkaProducer, topic: str, records: Sequence[Record], *, timeout_s: float,
                    limit_bytes: int, placements: Sequence[Placement] | None = None) -> Sent:
    """Send `records` to `topic` and find out what became of each one, within `timeout_s` in total.

    Never raises for a Kafka error: each is classified (services/kafka_errors.py) into the result. A
    record refused before sending (aiokafka checks `max_request_size`) does not stop the others; an
    outage or configuration error does (the rest is not sent). A record still unacknowledged at the
    deadline counts as not sent (aiokafka may still store it later: at least once, not exactly once).
    Sending may take METADATA_GRACE_S longer: aiokafka waits up to its request timeout for a topic's
    metadata before it says the topic is unknown (a configuration error, not an outage).
    `placements` (one per record) name a partition, headers or a timestamp.
    """
    sent = Sent()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    futures: dict[int, asyncio.Future[object]] = {}
    try:
        async with asyncio.timeout_at(deadline + METADATA_GRACE_S):
            for index, (key, value) in enumerate(records):
                how = placements[index] if placements is not None else DEFAULT_PLACEMENT
                try:
                    futures[index] = await producer.send(topic, key=key, value=value, partition=how.partition,
                                                         timestamp_ms=how.timestamp_ms,
                                                         headers=list(how.headers) or None)
                except KafkaError as exc:
                    _settle(sent, index, exc, topic, limit_bytes, records[index])
                    if sent.failure is not None:
                        break
    except TimeoutError:
        sent.fail(BrokerUnavailable(f"sending to {topic}: no room or no metadata within {timeout_s:g}s"))
    if futures:
        await asyncio.wait(futures.values(), timeout=max(0.0, deadline - loop.time()))
    for index, future in futures.items():
        if not future.done():
            future.add_done_callback(_retrieve)
            sent.fail(BrokerUnavailable(f"sending to {topic}: no acknowledgement within {timeout_s:g}s"))
        elif future.cancelled():
            sent.fail(BrokerUnavailable(f"sending to {topic}: the send was cancelled"))
        elif (error := future.exception()) is not None:
            _settle(sent, index, error, topic, limit_bytes, records[index])
        else:
            sent.acked.add(index)
            _note_position(sent, future.result())
    return sent


def _note_position(sent: Sent, metadata: object) -> None:
    """The partition and offset an acknowledged record got (aiokafka's RecordMetadata)."""
    partition, offset = getattr(metadata, "partition", None), getattr(metadata, "offset", None)
    if isinstance(partition, int) and isinstance(offset, int):
        sent.positions[partition] = max(offset, sent.positions.get(partition, -1))


def _settle(sent: Sent, index: int, exc: BaseException, topic: str, limit_bytes: int, record: Record) -> None:
    error = as_fatigue_error(exc, f"sending to {topic}")
    if not isinstance(error, RecordRefused):
        sent.fail(error)
        return
    if error.reason == TOO_LARGE:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record[0], record[1], [])  # what aiokafka checks
        error = RecordRefused(f"{error}; the record is {size:,} bytes, the producer's limit {limit_bytes:,} "
                              f"(FATIGUE_KAFKA_MAX_REQUEST_BYTES; the topic's max.message.bytes may be lower)",
                              reason=TOO_LARGE, record_bytes=size, limit_bytes=limit_bytes)
    sent.refused[index] = error


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark a late failure as seen, so asyncio does not log 'exception was never retrieved'."""
    if not future.cancelled():
        future.exception()


REMEMBERED_ACKS = 10_000
"""How many acknowledged record ids an AckedProducer remembers, so a retry does not send them again."""


class AckedProducer:
    """A producer started on first use (and again after a failed start) whose `send_all` returns only
    once the brokers acknowledged or refused every record (acks=all). What the scorer's action
    publisher and every dead-letter sink write through."""

    def __init__(self, settings: CommonSettings, client_id: str, what: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._what = what
        self._producer: AIOKafkaProducer | None = None
        self._acked: OrderedDict[str, None] = OrderedDict()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(self._settings, client_id=self._client_id)
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise as_fatigue_error(exc, f"starting the {self._what} producer") from exc
            self._producer = producer
        return self._producer

    async def send_all(self, topic: str, records: Sequence[Record], ids: Sequence[str] | None = None,
                       placements: Sequence[Placement] | None = None) -> dict[int, RecordRefused]:
        """Send (key, value) records to `topic`; return those refused for their own properties (by index).

        With `ids` (one per record), a record whose id an earlier call had acknowledged is not sent again:
        when an outage interrupts a call, the caller's retry with the same records sends only the rest.
        `placements` (one per record): see `send_each`.
        Raises BrokerUnavailable (outage: retry) or BrokerMisconfigured (do not retry in place).
        """
        todo = [i for i in range(len(records)) if ids is None or ids[i] not in self._acked]
        if not todo:
            return {}
        producer = await self._started()
        timeout_s = 2 * self._settings.kafka_request_timeout_s  # aiokafka settles every record by then
        sent = await send_each(producer, topic, [records[i] for i in todo], timeout_s=timeout_s,
                               limit_bytes=self._settings.kafka_max_request_bytes,
                               placements=None if placements is None else [placements[i] for i in todo])
        if ids is not None:
            for j in sent.acked:
                self._remember(ids[todo[j]])
        if sent.failure is not None:
            raise sent.failure
        return {todo[j]: error for j, error in sent.refused.items()}

    def _remember(self, record_id: str) -> None:
        self._acked[record_id] = None
        if len(self._acked) > REMEMBERED_ACKS:
            self._acked.popitem(last=False)

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
