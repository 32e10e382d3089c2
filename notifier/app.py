"""The notifier process: wiring from NotifierSettings, the metrics server, `main()`.

`fatigue notifier` calls `main()`; tests call `run()` with their own settings and a stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable
from typing import Any

import httpx
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from notifier.consumer import ActionConsumer
from notifier.delivery import SenderConfig, WebhookSender
from notifier.dispatch import Dispatcher
from notifier.health import NotifierHealth, start_web
from notifier.ledger import RedisLedger
from notifier.pinned import vetted_transport
from notifier.scheduler import DeliveryScheduler
from services.deadletter import KafkaDeadLetterSink
from services.delivery.destinations import Resolver, system_resolver, vetted_addresses
from services.delivery.digests import DigestStore
from services.delivery.health import CircuitConfig, EndpointHealthStore
from services.delivery.store import DeliveryStore
from services.delivery.subscriptions import SubscriptionStore
from services.errors import ConfigError, FatigueError
from services.kafka import kafka_security_kwargs
from services.kafka_errors import as_fatigue_error
from services.lag import LagReporter
from services.logs import setup_logging
from services.metrics import NotifierMetrics
from services.redisio import RedisClient, make_redis
from services.settings import NotifierSettings

log = logging.getLogger(__name__)

CLIENT_ID = "fatigue-notifier"
LEASE_MARGIN_S = 30.0
"""A claimed delivery is due again this long after the attempt's timeout if its claimer died."""


def make_consumer(
    settings: NotifierSettings,
    *,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    rebalance_timeout_ms: int | None = None,
    listener: ConsumerRebalanceListener | None = None,
) -> AIOKafkaConsumer:
    """A consumer of the actions topic that only commits what was handled; `listener` hears its
    group's assignments (the notifier's readiness)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.notifier_group_id,
        client_id=CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        rebalance_timeout_ms=rebalance_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **kafka_security_kwargs(settings),
    )
    consumer.subscribe([settings.actions_topic], listener=listener)
    return consumer


def make_http_client(settings: NotifierSettings, resolve: Resolver = system_resolver) -> httpx.AsyncClient:
    """Redirects are not followed (they would bypass the destination check); no proxy from env;
    connections go only to addresses the destination check allowed when they are opened
    (notifier/pinned.py)."""
    check = functools.partial(vetted_addresses, allow_private=settings.allow_private_destinations,
                              allow_loopback=settings.allow_loopback_destinations, resolve=resolve)
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, transport=vetted_transport(check))


def make_sender(
    settings: NotifierSettings, client: httpx.AsyncClient, metrics: NotifierMetrics, resolve: Resolver
) -> WebhookSender:
    config = SenderConfig(
        timeout_s=settings.delivery_timeout_s,
        allow_private=settings.allow_private_destinations,
        allow_loopback=settings.allow_loopback_destinations,
    )
    return WebhookSender(client, config, metrics, resolve=resolve)


def make_scheduler(
    settings: NotifierSettings, redis: RedisClient, store: DeliveryStore, client: httpx.AsyncClient,
    metrics: NotifierMetrics, resolve: Resolver = system_resolver,
) -> DeliveryScheduler:
    """The sending side as `fatigue notifier` runs it (the bench and the tests build it here too)."""
    return DeliveryScheduler(
        store, SubscriptionStore(redis, settings.keys), RedisLedger(redis, settings.keys, settings.delivered_ttl_s),
        make_sender(settings, client, metrics, resolve), metrics,
        EndpointHealthStore(redis, settings.keys, circuit_config(settings)), DigestStore(redis, settings.keys),
        schedule_s=settings.retry_schedule_s, lease_s=settings.delivery_timeout_s + LEASE_MARGIN_S,
        concurrency=settings.delivery_concurrency, per_endpoint=settings.delivery_concurrency_per_endpoint,
        poll_s=settings.scheduler_poll_s,
    )


def circuit_config(settings: NotifierSettings) -> CircuitConfig:
    """The circuit breaker's settings; a probe holds the others back for as long as it may take."""
    return CircuitConfig(
        failure_threshold=settings.circuit_failure_threshold,
        open_s=settings.circuit_open_s,
        max_open_s=max(settings.circuit_open_max_s, settings.circuit_open_s),
        probe_s=settings.delivery_timeout_s + LEASE_MARGIN_S,
        disable_after_s=settings.endpoint_disable_after_s,
    )


async def _start_consumer(consumer: AIOKafkaConsumer, settings: NotifierSettings) -> None:
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        where = f"cannot start the notifier's consumer on {settings.kafka_bootstrap_servers}"
        raise as_fatigue_error(exc, where) from exc


async def serve_web(settings: NotifierSettings, registry: CollectorRegistry, health: NotifierHealth) -> web.AppRunner:
    """/metrics, /healthz and /readyz on FATIGUE_METRICS_HOST:FATIGUE_METRICS_PORT (notifier/health.py)."""
    try:
        runner = await start_web(health, registry, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}; "
            "set FATIGUE_METRICS_PORT to a free port (0 turns the metrics server off)"
        ) from exc
    log.info("serving /metrics, /healthz and /readyz on http://%s:%d", settings.metrics_host, settings.metrics_port)
    return runner


async def run(
    settings: NotifierSettings,
    stop: asyncio.Event | None = None,
    *,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    rebalance_timeout_ms: int | None = None,
    registry: CollectorRegistry | None = None,
    resolve: Resolver = system_resolver,
    shutdown_grace_s: float | None = None,
) -> None:
    """Deliver actions until `stop` is set (or the task is cancelled); then close everything.

    Two loops run side by side: the consumer stores one delivery per matching subscription in
    Redis and then commits the record; the scheduler sends due deliveries and retries them on
    `retry_schedule_s`. After `stop`, attempts in flight get `shutdown_grace_s` (default: the
    delivery timeout) to finish; what is still in flight then is cancelled and, its claim
    expiring, sent again (by this or another notifier).
    Raises BrokerUnavailable / StoreUnavailable when Kafka / Redis cannot be used, BrokerMisconfigured
    when the brokers refuse this client (services/kafka_errors.py).
    """
    stop = stop or asyncio.Event()
    registry = registry or CollectorRegistry()
    metrics = NotifierMetrics(registry)
    health = NotifierHealth()
    async with contextlib.AsyncExitStack() as resources:
        if settings.metrics_port:
            resources.push_async_callback((await serve_web(settings, registry, health)).cleanup)
        redis = make_redis(settings)
        resources.push_async_callback(redis.aclose)
        client = await resources.enter_async_context(make_http_client(settings, resolve))
        consumer = make_consumer(settings, session_timeout_ms=session_timeout_ms,
                                 heartbeat_interval_ms=heartbeat_interval_ms,
                                 rebalance_timeout_ms=rebalance_timeout_ms, listener=health)
        await _start_consumer(consumer, settings)
        resources.push_async_callback(consumer.stop)
        subscriptions = SubscriptionStore(redis, settings.keys)
        ledger = RedisLedger(redis, settings.keys, settings.delivered_ttl_s)
        store = DeliveryStore(redis, settings.keys, delivered_ttl_s=settings.delivered_ttl_s,
                              dead_letter_ttl_s=settings.dead_letter_ttl_s, wait_replicas=settings.wait_replicas,
                              wait_timeout_ms=settings.redis_wait_timeout_ms)
        scheduler = make_scheduler(settings, redis, store, client, metrics, resolve)
        scheduler.on_round = lambda: health.beat("scheduler")
        dispatcher = Dispatcher(subscriptions, ledger, store, metrics, on_scheduled=scheduler.wake)
        dead_letters = KafkaDeadLetterSink(settings, client_id="fatigue-notifier-dead-letters",
                                           on_refused=metrics.count_refused_letter)
        resources.push_async_callback(dead_letters.close)
        log.info("notifier consuming %s as group %s", settings.actions_topic, settings.notifier_group_id)
        grace_s = settings.delivery_timeout_s if shutdown_grace_s is None else shutdown_grace_s
        lag = LagReporter(metrics.consumer, settings.notifier_group_id, lambda: consumer)
        consuming = ActionConsumer(consumer, dispatcher, dead_letters,
                                   on_dead_letter=lambda _: metrics.bad_records.inc(),
                                   on_round=lambda: health.beat("consumer"))
        work = asyncio.gather(consuming.run(stop), scheduler.run(stop), lag.run(stop))
        await _until_stopped(work, stop, grace_s)
    log.info("notifier stopped")


async def _until_stopped(work: Awaitable[Any], stop: asyncio.Event, grace_s: float) -> None:
    """Run `work`; once `stop` is set give it `grace_s` to finish, then cancel it. Re-raise its error."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
    if task.cancelled():
        return
    error = task.exception()
    # A gather cancelled after the grace period may hold CancelledError as its exception rather than
    # be marked cancelled (Python 3.11): that is the shutdown we asked for, not a failure.
    if error is not None and not isinstance(error, asyncio.CancelledError):
        raise error


async def _serve(settings: NotifierSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await run(
            settings,
            stop,
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
        )
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def main() -> None:
    """Entry point of `fatigue notifier`: settings from the environment, run until SIGINT/SIGTERM."""
    settings = NotifierSettings.load("notifier")
    setup_logging(settings.log_level, service="notifier", fmt=settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except FatigueError as exc:
        log.critical("notifier stopped: %s — %s", exc, exc.operator_action)
        raise SystemExit(1) from exc
