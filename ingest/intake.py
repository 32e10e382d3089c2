"""`fatigue intake`: contract-v1 events from upstream Kafka producers, through the same accept path.

Upstream systems that already run Kafka publish one contract-v1 event per record (plain JSON,
key = customer id) to the intake topic (`<prefix>intake.v1`). This consumer group:

1. reads a batch (per partition, in order);
2. validates every record with the contract code of the API (`AcceptPath.check`): what is not
   a valid event goes to the dead-letter topic (stage `intake.validate`) with the reason, counted;
3. forwards the valid ones through the shared accept path (claim ids, publish envelopes to the
   events topic with acks=all, confirm), de-duplicated per producer (record header `producer`,
   else FATIGUE_INTAKE_PRODUCER); an event the events topic refuses for its own properties (too
   large) goes to the dead-letter topic too (stage `intake.forward`), never retried;
4. publishes the batch's dead letters (each at most 128 KiB: services/deadletter.py), then commits
   the batch's offsets.

Errors are classified once (services/kafka_errors.py). A Kafka outage is retried in place (nothing
committed meanwhile; what was acknowledged is not sent again); a record refused for its own
properties never is; a configuration error (not authorized, unknown topic) stops the process with
the operator action. A crash re-reads from the last commit and the de-duplication claims make the
re-forward a no-op. Scale out with more processes, up to the intake topic's partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, start_http_server

from ingest.accept import AcceptPath, EventsInFlight
from ingest.dedup import DedupStore
from ingest.publisher import EventPublisher
from ingest.validation import BodyRefused, parse_json
from services.contract import EventIn, to_ms
from services.deadletter import DeadLetter, DeadLetterSink, KafkaDeadLetterSink
from services.errors import BrokerMisconfigured, BrokerUnavailable, ConfigError, FatigueError, RecordRefused
from services.kafka import ensure_topics, kafka_security_kwargs
from services.kafka_errors import as_fatigue_error
from services.lag import LagReporter
from services.logs import setup_logging
from services.metrics import IntakeMetrics
from services.names import HEADER_PRODUCER
from services.redisio import make_redis
from services.settings import IntakeSettings

log = logging.getLogger(__name__)

STAGE = "intake.validate"
FORWARD_STAGE = "intake.forward"
"""Dead letters of valid events the events topic refused (too large)."""
REFUSED_FORWARD = "intake.forward"
REFUSED_FETCH = "intake.fetch"
"""`stage` labels of `fatigue_records_refused_total` (services/metrics.REFUSED_STAGES_INTAKE)."""
CLIENT_ID = "fatigue-intake"
MAX_PRODUCER_CHARS = 100
T = TypeVar("T")


class InvalidRecord(ValueError):
    """An intake record that is not one valid contract-v1 event."""


@dataclass
class Checked:
    events: dict[str, list[tuple[ConsumerRecord, EventIn]]]
    """Valid events by producer, with their records, in record order."""
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
        checked.events.setdefault(producer, []).append((record, event))
    return checked


def refused_letters(pairs: list[tuple[ConsumerRecord, EventIn]], refused: list[tuple[EventIn, RecordRefused]],
                    now: datetime) -> list[DeadLetter]:
    """Dead letters (stage intake.forward) of the intake records whose events the events topic refused."""
    record_of: dict[str, ConsumerRecord] = {}
    for record, event in pairs:
        record_of.setdefault(event.event_id, record)
    letters = []
    for event, error in refused:
        record = record_of[event.event_id]
        letters.append(DeadLetter.of(
            FORWARD_STAGE, topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
            value=record.value, error=error, failed_at_ms=to_ms(now), timestamp_ms=record.timestamp))
    return letters


def _one_event(value: bytes | None, accept: AcceptPath, now: datetime) -> EventIn:
    payload: Any = parse_json(value or b"")
    if not isinstance(payload, dict):
        raise InvalidRecord(f"a record holds one event object, not {type(payload).__name__}")
    batch = accept.check([payload], now=now)
    if batch.rejected:
        raise InvalidRecord(batch.rejected[0].error)
    return batch.valid[0][1]


@dataclass
class Tally:
    """What one batch did, counted once it is committed (a batch retried in place counts once)."""

    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    refused: list[str] = field(default_factory=list)
    """The reason of each valid event the events topic refused."""


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
            batches = await self._poll(stop)
            for tp, records in batches.items():
                if not records:
                    continue
                started = time.perf_counter()
                tally = await self._handle(records, stop)
                if tally is None:
                    return  # stopping in the middle of a retry: nothing committed, re-read next time
                await self._consumer.commit({tp: records[-1].offset + 1})
                self._count(tally)
                self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _poll(self, stop: asyncio.Event) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One fetch. An outage is waited out (counted as a retry); a record the client cannot fetch is
        logged at ERROR and counted (one larger than the fetch size: aiokafka moves past it; a corrupt
        batch is fetched again until an operator moves the group's offset past it); a configuration
        error stops the worker (BrokerMisconfigured)."""
        try:
            return await self._consumer.getmany(timeout_ms=self._settings.fetch_max_wait_ms,
                                                max_records=self._settings.intake_batch_max)
        except KafkaError as exc:
            error = as_fatigue_error(exc, f"reading {self._settings.intake_topic}")
            if isinstance(error, BrokerMisconfigured):
                raise error from exc
            if isinstance(error, RecordRefused):
                self._metrics.refused_records.labels(stage=REFUSED_FETCH, reason=error.reason).inc()
                log.error("intake record not readable, not processed: %s", error)
            else:
                self._metrics.retries.labels(reason="broker_unavailable").inc()
                log.warning("intake topic not read, retrying in %gs: %s", self._settings.retry_backoff_s, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.retry_backoff_s)
            return {}

    async def _handle(self, records: list[ConsumerRecord], stop: asyncio.Event) -> Tally | None:
        """Forward a batch's valid events and publish its dead letters; None when stopped meanwhile."""
        now = datetime.now(UTC)
        checked = check_records(records, self._accept, self._settings.intake_producer, now)
        tally = Tally(invalid=len(checked.letters))
        letters = list(checked.letters)
        for producer, pairs in checked.events.items():
            forward = functools.partial(self._accept.accept, [event for _, event in pairs], producer=producer,
                                        received_at=now)
            stored = await self._until_done(forward, stop)
            if stored is None:
                return None
            tally.accepted += stored.count
            tally.duplicates += stored.duplicates
            tally.refused += [error.reason for _, error in stored.refused]
            letters += refused_letters(pairs, stored.refused, now)
        if await self._until_done(lambda: self._published(letters), stop) is None:
            return None
        for letter in letters:
            log.warning("intake record %s/%d@%d dead-lettered (%s): %s", letter.topic, letter.partition,
                        letter.offset, letter.stage, letter.error_message)
        return tally

    def _count(self, tally: Tally) -> None:
        self._metrics.dead_letters.labels(stage=STAGE).inc(tally.invalid)
        self._metrics.dead_letters.labels(stage=FORWARD_STAGE).inc(len(tally.refused))
        self._metrics.records.labels(outcome="invalid").inc(tally.invalid)
        self._metrics.records.labels(outcome="accepted").inc(tally.accepted)
        self._metrics.records.labels(outcome="duplicate").inc(tally.duplicates)
        self._metrics.records.labels(outcome="refused").inc(len(tally.refused))
        for reason in tally.refused:
            self._metrics.refused_records.labels(stage=REFUSED_FORWARD, reason=reason).inc()

    async def _published(self, letters: list[DeadLetter]) -> bool:
        await self._dead_letters.publish(letters)
        return True

    async def _until_done(self, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
        """Run `attempt` until it succeeds (its result) or `stop` is set (None). Only outages are retried
        (BrokerUnavailable, EventsInFlight); BrokerMisconfigured and anything else propagate."""
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
    dead_letters = KafkaDeadLetterSink(settings, client_id=CLIENT_ID, on_refused=metrics.count_refused_letter)
    accept = AcceptPath(publisher, DedupStore(redis, settings.keys, settings.dedup_ttl_s),
                        topic=settings.events_topic, max_future_skew_s=settings.max_future_skew_s,
                        claim_wait_s=settings.kafka_request_timeout_s + 1)
    consumer = make_consumer(settings)
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            where = f"cannot start the intake consumer on {settings.kafka_bootstrap_servers}"
            raise as_fatigue_error(exc, where) from exc
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
