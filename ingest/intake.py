"""`fatigue intake`: contract-v1 events from upstream Kafka producers, through the same accept path.

Upstream systems that already run Kafka publish one contract-v1 event per record (plain JSON,
key = customer id) to the intake topic (`<prefix>intake.v1`). This consumer group:

1. reads a batch (per partition, in order);
2. validates every record with the contract code of the API (`AcceptPath.check`): what is not
   a valid event goes to the dead-letter topic (stage `intake.validate`) with the reason, counted;
3. forwards the valid ones through the shared accept path (claim ids, publish envelopes to the
   events topic with acks=all, confirm), de-duplicated per producer (record header `producer`,
   else FATIGUE_INTAKE_PRODUCER);
4. commits the batch's offsets only then.

A Kafka or Redis outage is retried in place (nothing committed meanwhile); a crash re-reads from
the last commit and the de-duplication claims make the re-forward a no-op. Scale out with more
processes, up to the intake topic's partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, start_http_server

from ingest.accept import AcceptPath, EventsInFlight
from ingest.dedup import DedupStore
from ingest.publisher import EventPublisher
from ingest.validation import BodyRefused, parse_json
from services.contract import EventIn, to_ms
from services.deadletter import DeadLetter, DeadLetterSink, KafkaDeadLetterSink
from services.errors import BrokerUnavailable, ConfigError, FatigueError
from services.kafka import ensure_topics, kafka_security_kwargs
from services.lag import LagReporter
from services.logs import setup_logging
from services.metrics import IntakeMetrics
from services.names import HEADER_PRODUCER
from services.redisio import make_redis
from services.settings import IntakeSettings

log = logging.getLogger(__name__)

STAGE = "intake.validate"
CLIENT_ID = "fatigue-intake"
MAX_PRODUCER_CHARS = 100
T = TypeVar("T")


class InvalidRecord(ValueError):
    """An intake record that is not one valid contract-v1 event."""


@dataclass
class Checked:
    events: dict[str, list[EventIn]]
    """Valid events by producer, in record order."""
    letters: list[DeadLetter]


def producer_of(record: ConsumerRecord, default: str) -> str:
    """The record's `producer` header (UTF-8, 1-100 printable characters), else the default."""
    for name, value in record.headers or ():
        if name == HEADER_PRODUCER:
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRecord("header producer is not UTF-8") from exc
            if not 0 < len(text) <= MAX_PRODUCER_CHARS or not text.isprintable():
                raise InvalidRecord(f"header producer must be 1-{MAX_PRODUCER_CHARS} printable characters")
            return text
    return default


def check_records(records: list[ConsumerRecord], accept: AcceptPath, default_producer: str, now: datetime) -> Checked:
    """Split a batch into valid events (by producer) and dead letters with the reason. Pure."""
    checked = Checked(events={}, letters=[])
    for record in records:
        try:
            producer = producer_of(record, default_producer)
            event = _one_event(record.value, accept, now)
        except (InvalidRecord, BodyRefused) as exc:
            checked.letters.append(DeadLetter.of(
                STAGE, topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
                value=record.value, error=InvalidRecord(str(exc)), failed_at_ms=to_ms(now),
                timestamp_ms=record.timestamp))
            continue
        checked.events.setdefault(producer, []).append(event)
    return checked


def _one_event(value: bytes | None, accept: AcceptPath, now: datetime) -> EventIn:
    payload: Any = parse_json(value or b"")
    if not isinstance(payload, dict):
        raise InvalidRecord(f"a record holds one event object, not {type(payload).__name__}")
    batch = accept.check([payload], now=now)
    if batch.rejected:
        raise InvalidRecord(batch.rejected[0].error)
    return batch.valid[0][1]


class IntakeWorker:
    """The consumer loop (see the module docstring)."""

    def __init__(self, consumer: AIOKafkaConsumer, accept: AcceptPath, dead_letters: DeadLetterSink,
                 settings: IntakeSettings, metrics: IntakeMetrics) -> None:
        self._consumer = consumer
        self._accept = accept
        self._dead_letters = dead_letters
        self._settings = settings
        self._metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._metrics.last_poll.set(time.time())
            batches = await self._consumer.getmany(timeout_ms=self._settings.fetch_max_wait_ms,
                                                   max_records=self._settings.intake_batch_max)
            for tp, records in batches.items():
                if not records:
                    continue
                started = time.perf_counter()
                if not await self._handle(records, stop):
                    return  # stopping in the middle of a retry: nothing committed, re-read next time
                await self._consumer.commit({tp: records[-1].offset + 1})
                self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _handle(self, records: list[ConsumerRecord], stop: asyncio.Event) -> bool:
        now = datetime.now(UTC)
        checked = check_records(records, self._accept, self._settings.intake_producer, now)
        if await self._until_done(lambda: self._published(checked.letters), stop) is None:
            return False
        for letter in checked.letters:
            log.warning("intake record %s/%d@%d dead-lettered: %s", letter.topic, letter.partition, letter.offset,
                        letter.error_message)
        self._metrics.records.labels(outcome="invalid").inc(len(checked.letters))
        self._metrics.dead_letters.labels(stage=STAGE).inc(len(checked.letters))
        for producer, events in checked.events.items():
            forward = functools.partial(self._accept.accept, events, producer=producer, received_at=now)
            stored = await self._until_done(forward, stop)
            if stored is None:
                return False
            self._metrics.records.labels(outcome="accepted").inc(stored.count)
            self._metrics.records.labels(outcome="duplicate").inc(stored.duplicates)
        return True

    async def _published(self, letters: list[DeadLetter]) -> bool:
        await self._dead_letters.publish(letters)
        return True

    async def _until_done(self, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
        """Run `attempt` until it succeeds (its result) or `stop` is set (None); only outages are retried."""
        while True:
            try:
                return await attempt()
            except (BrokerUnavailable, EventsInFlight) as exc:
                reason = "in_flight" if isinstance(exc, EventsInFlight) else "broker_unavailable"
                self._metrics.retries.labels(reason=reason).inc()
                log.warning("intake batch not forwarded, retrying in %gs: %s", self._settings.retry_backoff_s, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.retry_backoff_s)
            if stop.is_set():
                return None


def make_consumer(settings: IntakeSettings) -> AIOKafkaConsumer:
    """The intake topic in the consumer group, manual commits, from the earliest record."""
    return AIOKafkaConsumer(
        settings.intake_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.intake_group_id,
        client_id=CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **kafka_security_kwargs(settings),
    )


async def run(settings: IntakeSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    """Run the intake consumer until `stop` is set (the tests call this in-process)."""
    metrics = IntakeMetrics(registry or CollectorRegistry())
    await ensure_topics(settings)
    redis = make_redis(settings)
    publisher = EventPublisher(settings, client_id=CLIENT_ID)
    dead_letters = KafkaDeadLetterSink(settings, client_id=CLIENT_ID)
    accept = AcceptPath(publisher, DedupStore(redis, settings.keys, settings.dedup_ttl_s),
                        topic=settings.events_topic, max_future_skew_s=settings.max_future_skew_s,
                        claim_wait_s=settings.kafka_request_timeout_s + 1)
    consumer = make_consumer(settings)
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
        log.info("intake consuming %s as group %s", settings.intake_topic, settings.intake_group_id)
        lag = asyncio.create_task(LagReporter(metrics.consumer, settings.intake_group_id, lambda: consumer).run(stop))
        try:
            await IntakeWorker(consumer, accept, dead_letters, settings, metrics).run(stop)
        finally:
            lag.cancel()
            await asyncio.wait([lag])
    finally:
        await consumer.stop()
        await dead_letters.close()
        await publisher.close()
        await redis.aclose()


def serve_metrics(settings: IntakeSettings, registry: CollectorRegistry) -> WSGIServer:
    """/metrics on FATIGUE_METRICS_HOST:FATIGUE_METRICS_PORT (a thread); ConfigError when the port is taken."""
    try:
        server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        raise ConfigError(f"cannot serve metrics on {where}: {exc}") from exc
    log.info("serving metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server


def main() -> None:
    """Entry point of `fatigue intake`: settings from the environment, run until SIGINT/SIGTERM."""
    settings = IntakeSettings.load("intake")
    setup_logging(settings.log_level, service="intake", fmt=settings.log_format)
    registry = CollectorRegistry()
    if settings.metrics_port:
        serve_metrics(settings, registry)
    try:
        asyncio.run(_serve(settings, registry))
    except FatigueError as exc:
        log.critical("intake stopped: %s — %s", exc, exc.operator_action)
        raise SystemExit(1) from exc


async def _serve(settings: IntakeSettings, registry: CollectorRegistry) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop, registry)
