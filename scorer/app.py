"""The Faust app: one agent consumes events and profiles (co-partitioned by customer id) in
batches and hands them to the Processor; one timer fires due customers of the owned partitions.

Faust does the consumer-group work (assignment, rebalancing, committing the offsets of acked
events); state lives in Redis (see scorer/store.py for why), so no Faust tables are declared.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import faust
from faust.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis

from scorer.clock import SystemClock
from scorer.core.implementation import describe as describe_core
from scorer.dryrun import check_policy
from scorer.health import Liveness
from scorer.processor import Processor, Record
from scorer.publisher import PUBLISH_STAGE, KafkaActionPublisher
from scorer.state_cache import StateCache
from scorer.store import StateStore
from scorer.transport import TunedApp, faust_credentials
from services.deadletter import KafkaDeadLetterSink
from services.errors import FatigueError, RecordRefused, StoreUnavailable
from services.kafka import kafka_security_kwargs
from services.lag import LAG_INTERVAL_S, LagReporter
from services.logs import setup_logging
from services.metrics import ScorerMetrics
from services.policy.model import DEFAULT_POLICY_FILE, Policy
from services.policy.resolver import PolicyEvent, PolicyRefused, PolicyResolver, PolicySwapped
from services.policy.store import PolicySource
from services.redisio import make_redis
from services.settings import ScorerSettings
from services.stored_values import ValueEncoder

log = logging.getLogger(__name__)

EXIT_AGENT_DIED = 70
"""Exit status when the agent died of an unexpected error (so fatigue up / Compose / k8s restart it)."""


class PolicyReloader:
    """The policy in force, hot-reloaded without restart.

    Precedence: the policy stored through the API (Redis, `PolicySource`) wins; the policy file
    (FATIGUE_POLICY_FILE, else the packaged default) applies while none is stored. `poll()` checks
    the file's stamp and the stored version counter; whatever changed is parsed, and only a valid
    document is swapped in (one attribute assignment: the next batch or timer uses it). An invalid
    one is logged, counted in `fatigue_scorer_policy_reload_failures_total` and ignored, so the
    previous policy stays in force. An invalid file at start-up still stops the scorer (ConfigError).

    The resolving and caching are `services.policy.resolver.PolicyResolver` (shared with the API);
    this class adds the scorer's log lines and metrics.
    """

    def __init__(self, source: PolicySource, path: Path, metrics: ScorerMetrics) -> None:
        self._path = path
        self._metrics = metrics
        self._source = source
        self._policies = PolicyResolver(source, file=path, on_event=self._report, vet=check_policy)
        metrics.policy_version.set(0)

    @property
    def policy(self) -> Policy:
        return self._policies.in_force.policy

    @property
    def version(self) -> int | None:
        """Version of the stored policy in force; None while the file's policy is."""
        return self._policies.in_force.version

    @property
    def file_policy(self) -> Policy:
        """The latest valid policy of the file (in force only while none is stored)."""
        return self._policies.fallback

    async def ensure_loaded(self) -> None:
        """Before the first batch: the stored policy must be in force if there is one."""
        await self._policies.ensure_loaded()

    async def poll(self) -> None:
        """Swap in a changed, valid policy. StoreUnavailable when Redis does not answer (retry later)."""
        await self._policies.poll()

    def fallback_for_failure(self) -> Policy | None:
        """The policy that would replace the one in force if the core fails with it on live data."""
        return self._policies.fallback_for_failure()

    async def on_policy_failure(self, cause: BaseException) -> None:
        """The core failed with the policy in force where the fallback works: refuse it and say so,
        in the log, the metrics and the stored record (GET /v1/policy shows `problem`)."""
        failed = self._policies.in_force.version
        self._policies.refuse_in_force(cause)
        if failed is not None:
            problem = (f"refused by the scorer at run time: the core failed with it on live data "
                       f"({type(cause).__name__}: {cause}); the previous policy is in force")
            try:
                await self._source.report_problem(failed, problem)
            except StoreUnavailable as exc:
                log.warning("could not record the refusal of policy v%d in Redis: %s", failed, exc)

    def _report(self, event: PolicyEvent) -> None:
        if isinstance(event, PolicySwapped):
            version = event.current.version
            self._metrics.policy_version.set(version or 0)
            if version is None:
                log.info("policy from %s in force (no policy stored through the API)", self._path)
            else:
                log.info("policy v%d in force", version)
        elif isinstance(event, PolicyRefused):
            self._metrics.policy_reload_failures.labels(source=event.source).inc()
            kept = event.kept.version
            in_force = f"v{kept}" if kept is not None else f"from {self._path}"
            if event.source == "runtime":
                log.error("policy in force refused at run time (the core failed with it), policy %s is in force "
                          "now: %s", in_force, event.error)
            else:
                log.error("new policy refused, policy %s stays in force: %s", in_force, event.error)
        else:
            log.info("policy file %s changed; stored policy v%d stays in force (API wins)", self._path,
                     event.in_force.version)


class Scorer:
    """Everything the scorer process holds: the Faust app and what its agent and timer use."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.redis: Redis = make_redis(settings)
        self.reloader = PolicyReloader(
            PolicySource(self.redis, settings.keys), settings.policy_file or DEFAULT_POLICY_FILE, self.metrics
        )
        self.dead_letters = KafkaDeadLetterSink(settings, client_id="fatigue-scorer-dead-letters",
                                                on_refused=self.metrics.count_refused_letter)
        self.publisher = KafkaActionPublisher(settings, self.dead_letters, on_refused=self._count_refused_action)
        self.liveness = Liveness(stall_s=settings.stall_s, tick_interval_s=settings.tick_interval_s)
        self.exit_code = 0
        self.processor = Processor(
            StateStore(self.redis, settings.keys, settings.scorer_app_id, ValueEncoder(settings.store_format),
                       StateCache(settings.state_cache_size, self._count_cache_lookup)),
            self.publisher,
            lambda: self.policy,
            SystemClock(),
            self.metrics,
            events_topic=settings.events_topic,
            profiles_topic=settings.profiles_topic,
            dead_letters=self.dead_letters,
            fallback_policy=self.reloader.fallback_for_failure,
            on_policy_failure=self.reloader.on_policy_failure,
            timer_settle_s=settings.timer_settle_s,
        )
        self.app = self._build_app()

    def _count_refused_action(self, error: RecordRefused) -> None:
        self.metrics.refused_records.labels(stage="scorer.actions", reason=error.reason).inc()
        self.metrics.dead_letters.labels(stage=PUBLISH_STAGE).inc()

    def _count_cache_lookup(self, hit: bool) -> None:
        self.metrics.state_cache.labels("hit" if hit else "miss").inc()

    @property
    def policy(self) -> Policy:
        """The policy in force (read by the Processor once per batch and per timer tick)."""
        return self.reloader.policy

    @property
    def policy_version(self) -> int | None:
        """Version of the stored policy in force; None while the file's (or packaged default) is."""
        return self.reloader.version

    def _build_app(self) -> faust.App:
        s = self.settings
        app = TunedApp(
            s.scorer_app_id,
            broker=[f"kafka://{server.strip()}" for server in s.kafka_bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(kafka_security_kwargs(s)),
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_allow_declare=False,
            topic_disable_leader=True,  # no on_leader timers: no need for Faust's leader topic
            producer_acks=-1,
            broker_session_timeout=s.broker_session_timeout_s,
            broker_heartbeat_interval=s.broker_heartbeat_interval_s,
            broker_rebalance_timeout=s.broker_rebalance_timeout_s,
            consumer_auto_offset_reset="earliest",
            web_host=s.web_host,
            web_bind=s.web_host,
            web_port=s.web_port or 6066,
            web_enabled=s.web_port != 0,
            datadir=str(s.data_dir),
            store="memory://",
            # Faust's own pages (/router/, /table/, /graph/, statistics) stay off: only ours below.
            web_router_enabled=False,
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
        )
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        source = app.topic(s.events_topic, s.profiles_topic, key_type=bytes, value_type=bytes)

        @app.agent(source, name="score")
        async def score(stream: faust.StreamT) -> None:
            await self._score(stream)

        @app.timer(interval=s.tick_interval_s, name="fire_due")
        async def fire_due() -> None:
            await self._fire_due(app)

        @app.timer(interval=s.policy_poll_s, name="reload_policy")
        async def reload_policy() -> None:
            try:
                await self.reloader.poll()
            except FatigueError as exc:
                log.warning("policy not checked (%s); retrying in %.1fs", exc, s.policy_poll_s)

        @app.page("/metrics")
        async def metrics(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            return view.bytes(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        @app.page("/healthz")
        async def healthz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            healthy, body = self.liveness.report()
            return view.json(body, status=200 if healthy else 503)

        self._add_operations(app)
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        return app

    def _add_operations(self, app: faust.App) -> None:
        """`/readyz` (joined to the consumer group, no rebalance in progress) and the consumer-lag timer."""
        # The one Faust page the settings cannot turn off, a constant {"status": "OK"} at "/": no
        # blueprint is applied, only the pages added with app.page.
        app.web.blueprints.applied = True
        joined = {"ok": False}
        lag = LagReporter(self.metrics.consumer, self.settings.scorer_app_id, lambda: app.consumer)

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _assigned(app: faust.App, assigned: object, **_: object) -> None:
            joined["ok"] = True

        @app.page("/readyz")
        async def readyz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            ready = joined["ok"] and not app.rebalancing
            checks = {"consumer_group": "ok" if ready else "error: not joined to the consumer group yet"}
            body = {"status": "ok" if ready else "unavailable", "checks": checks}
            return view.json(body, status=200 if ready else 503)

        @app.timer(interval=LAG_INTERVAL_S, name="consumer_lag")
        async def consumer_lag() -> None:
            await lag.update()

    async def _score(self, stream: faust.StreamT) -> None:
        s = self.settings
        self.liveness.agent_started()
        try:
            batches = stream.take_events(s.batch_max_events, within=s.batch_max_wait_s)  # type: ignore[attr-defined]
            async for events in batches:
                await self._process([_record(e.message) for e in events])
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._die(exc)
            raise
        finally:
            self.liveness.agent_stopped()

    async def _fire_due(self, app: faust.App) -> None:
        topic = self.settings.events_topic
        partitions = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)
        if partitions:
            try:
                await self.reloader.ensure_loaded()
                await self.processor.fire_due(partitions)
            except FatigueError as exc:
                log.warning("due timers not fired this tick (%s); retrying next tick", exc)
        self.liveness.ticked()

    async def _process(self, records: list[Record]) -> None:
        """Process one batch to completion before Faust may acknowledge (and commit) its events.

        Faust acks a `take_events` batch when the agent leaves it — also when the agent is
        cancelled at shutdown. So the batch runs in its own task that cancellation cannot
        interrupt: the agent waits for it (or the process dies, leaving the events un-acked and
        re-delivered on restart, where Redis offsets skip what was already committed).
        """
        task = asyncio.ensure_future(self._process_until_done(records))
        cancelled = False
        self.liveness.batch_started()
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
        task.result()
        self.liveness.batch_done()
        if cancelled:
            raise asyncio.CancelledError

    async def _process_until_done(self, records: list[Record]) -> None:
        """Retry in place while Kafka or Redis is unavailable: never skip a batch."""
        delay_s = 0.5
        while True:
            try:
                await self.reloader.ensure_loaded()
                await self.processor.process(records)
                return
            except FatigueError as exc:
                if not exc.retriable:
                    raise
                log.warning("batch of %d records not processed (%s); retrying in %.1fs", len(records), exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    def _die(self, exc: BaseException) -> None:
        """An unexpected error escaped the agent: report it and stop the worker with a non-zero exit, so
        whatever supervises the process restarts it (the batch was not acknowledged: it is re-read)."""
        log.critical("the scoring agent died (%s: %s); stopping the worker", type(exc).__name__, exc, exc_info=exc)
        self.liveness.died(f"{type(exc).__name__}: {exc}")
        self.exit_code = EXIT_AGENT_DIED
        os.kill(os.getpid(), signal.SIGTERM)

    async def _on_shutdown(self, app: faust.App, **_: object) -> None:
        await self.publisher.close()
        await self.dead_letters.close()
        await self.redis.aclose()


def _record(message: faust.types.tuples.Message) -> Record:
    timestamp_ms = int(message.timestamp * 1000) if message.timestamp else None
    return Record(message.topic, message.partition, message.offset, message.value, message.key, timestamp_ms)


def main() -> None:
    settings = ScorerSettings.load("scorer")
    # scorer.transport: Faust's services subclassed there log their start and stop at INFO.
    setup_logging(settings.log_level, service="scorer", fmt=settings.log_format, chatty=["scorer.transport"])
    log.info("%s", describe_core())  # compiled (mypyc) or the pure-Python fallback, and why
    scorer = Scorer(settings)
    # override_logging=False: Faust's and mode's records go through our one handler (JSON, redacted).
    worker = Worker(scorer.app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    worker.spinner = None  # no terminal spinner (its control sequences would land in the log)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        raise SystemExit(scorer.exit_code or exc.code) from None
