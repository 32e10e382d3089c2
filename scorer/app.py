"""The scorer process: a Faust worker (lifecycle, signals, timers, web pages) around a batched consumer.

The work loop is not a Faust agent: Faust's per-event stream costs more per event than a fast scorer's
whole budget (docs/performance.md). It is `scorer/consumer.py`: aiokafka's group consumer of the
events and profiles topics (co-partitioned by customer id), handing each owned partition's records to
the Processor in batches. Faust runs it as a task and keeps the timers — due customers of the owned
partitions (`fire_due`), the policy reload, consumer lag — and `/metrics`, `/healthz`, `/readyz`.
State lives in Redis per partition (scorer/partition_store.py), so no Faust tables are declared.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy
from faust.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scorer.clock import SystemClock
from scorer.consumer import PartitionConsumer, make_consumer, until_done
from scorer.core.implementation import describe as describe_core
from scorer.dryrun import check_policy
from scorer.health import Liveness
from scorer.partition_store import Fenced, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import PUBLISH_STAGE, KafkaActionPublisher
from scorer.reroute import REROUTE_STAGE, KafkaRecordRouter, Rerouting
from scorer.state_cache import StateCache
from scorer.transport import faust_credentials
from services.deadletter import KafkaDeadLetterSink
from services.errors import ConfigError, FatigueError, RecordRefused, StoreUnavailable
from services.kafka import kafka_security_kwargs
from services.kafka_errors import as_fatigue_error
from services.lag import LAG_INTERVAL_S, LagReporter
from services.logs import setup_logging
from services.metrics import ScorerMetrics
from services.partitions import check_partition_count
from services.policy.model import DEFAULT_POLICY_FILE, Policy
from services.policy.resolver import PolicyEvent, PolicyRefused, PolicyResolver, PolicySwapped
from services.policy.store import PolicySource
from services.redisio import RedisClient, make_redis
from services.settings import ScorerSettings
from services.stored_values import ValueEncoder

log = logging.getLogger(__name__)

EXIT_AGENT_DIED = 70
"""Exit status when the work loop died of an unexpected error (so fatigue up / Compose / k8s restart it)."""
EXIT_CONFIG = 2
"""Exit status for a configuration error (a changed partition count, brokers refusing the scorer)."""


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


class _WorkerBoot(BootStrategy):
    """Faust runs the worker — its tasks, timers, web pages, signals — but none of its Kafka clients:
    the scorer's consumer and producers are its own (scorer/consumer.py, scorer/publisher.py)."""

    enable_kafka = False


class WorkerApp(faust.App):
    BootStrategy = _WorkerBoot


class Scorer:
    """Everything the scorer process holds: the Faust app (the worker's lifecycle, timers and web pages)
    and the batched consumer of the partitions it owns (scorer/consumer.py) feeding the Processor."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.redis: RedisClient = make_redis(settings)
        self.reloader = PolicyReloader(
            PolicySource(self.redis, settings.keys), settings.policy_file or DEFAULT_POLICY_FILE, self.metrics
        )
        self.dead_letters = KafkaDeadLetterSink(settings, client_id="fatigue-scorer-dead-letters",
                                                on_refused=self.metrics.count_refused_letter)
        self.publisher = KafkaActionPublisher(settings, self.dead_letters, on_refused=self._count_refused_action)
        self.router = KafkaRecordRouter(settings, self.dead_letters, on_refused=self._count_refused_reroute)
        self.liveness = Liveness(stall_s=settings.stall_s, tick_interval_s=settings.tick_interval_s)
        self.exit_code = 0
        self.processor = Processor(
            RedisPartitionStore(self.redis, settings.keys, wait_replicas=settings.wait_replicas,
                                wait_timeout_ms=settings.redis_wait_timeout_ms),
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
            encoder=ValueEncoder(settings.store_format),
            cache=StateCache(settings.state_cache_size),
            rerouting=Rerouting(settings.partitions, self.router,
                                lambda topic, n: self.metrics.rerouted.labels(topic=topic).inc(n)),
        )
        self.kafka_consumer: AIOKafkaConsumer | None = None
        self.partitions: PartitionConsumer | None = None
        self._stop = asyncio.Event()
        self._joined = False
        self.app = self._build_app()

    def _count_refused_action(self, error: RecordRefused) -> None:
        self.metrics.refused_records.labels(stage="scorer.actions", reason=error.reason).inc()
        self.metrics.dead_letters.labels(stage=PUBLISH_STAGE).inc()

    def _count_refused_reroute(self, error: RecordRefused) -> None:
        self.metrics.refused_records.labels(stage=REROUTE_STAGE, reason=error.reason).inc()
        self.metrics.dead_letters.labels(stage=REROUTE_STAGE).inc()

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
        app = WorkerApp(
            s.scorer_app_id,
            broker=[f"kafka://{server.strip()}" for server in s.kafka_bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(kafka_security_kwargs(s)),
            topic_disable_leader=True,  # no on_leader timers: no need for Faust's leader topic
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

        @app.task
        async def consume() -> None:
            await self._consume()

        @app.timer(interval=s.tick_interval_s, name="fire_due")
        async def fire_due() -> None:
            await self._fire_due()

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
        """`/readyz` (joined to the consumer group) and the lag timer."""
        # The one Faust page the settings cannot turn off, a constant {"status": "OK"} at "/": no
        # blueprint is applied, only the pages added with app.page.
        app.web.blueprints.applied = True
        lag = LagReporter(self.metrics.consumer, self.settings.scorer_app_id, lambda: self.kafka_consumer)

        @app.page("/readyz")
        async def readyz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            ready = self._joined and self.liveness.agent_running
            checks = {"consumer_group": "ok" if ready else "error: not joined to the consumer group yet"}
            body = {"status": "ok" if ready else "unavailable", "checks": checks}
            return view.json(body, status=200 if ready else 503)

        @app.timer(interval=LAG_INTERVAL_S, name="consumer_lag")
        async def consumer_lag() -> None:
            await lag.update()
            if self.partitions is not None:
                self.metrics.lag_seconds.set(self.partitions.event_lag_s(int(time.time() * 1000)))

    def _joined_group(self) -> None:
        self._joined = True

    async def _consume(self) -> None:
        """Start the work loop: the partition count checked, the consumer started (outages retried in
        place; a configuration error stops the worker with exit status 2), then `_run_loop`."""
        try:
            await until_done(lambda: check_partition_count(self.redis, self.settings.keys, self.settings.partitions),
                              "checking the partition count")
            await until_done(self.reloader.ensure_loaded, "loading the policy")
            consumer = self.kafka_consumer = make_consumer(self.settings)
            await until_done(lambda: _start_consumer(consumer), "starting the consumer")
        except ConfigError as exc:
            self._die(exc, EXIT_CONFIG)
            return
        await self._run_loop(PartitionConsumer(consumer, self.processor, self.settings, on_batch=self._on_batch,
                                               on_assigned=self._joined_group))

    async def _run_loop(self, partitions: PartitionConsumer) -> None:
        """Process batches until stopped; an error that escapes (a bug) stops the worker, exit status 70."""
        self.partitions = partitions
        self.liveness.agent_started()
        try:
            await partitions.run(self._stop)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._die(exc)
            raise
        finally:
            self.liveness.agent_stopped()

    def _on_batch(self, started: bool) -> None:
        if started:
            self.liveness.batch_started()
        else:
            self.liveness.batch_done()

    async def _fire_due(self) -> None:
        if self.partitions is not None:
            try:
                await self.reloader.ensure_loaded()
                for partition in self.processor.owned():
                    await self.processor.fire_due(partition, behind=self.partitions.behind(partition))
            except Fenced as exc:
                log.warning("due timers not fired: %s", exc)
            except FatigueError as exc:
                log.warning("due timers not fired this tick (%s); retrying next tick", exc)
        self.liveness.ticked()

    def _die(self, exc: BaseException, exit_code: int = 0) -> None:
        """The work loop cannot go on: report it and stop the worker with a non-zero exit, so whatever
        supervises the process restarts it (nothing unacknowledged was committed): 70 for an error that
        escaped (a bug), 2 for a configuration error (with what to do)."""
        if isinstance(exc, ConfigError):
            log.critical("the scorer cannot start: %s %s", exc, exc.operator_action)
        else:
            log.critical("the scoring loop died (%s: %s); stopping the worker", type(exc).__name__, exc, exc_info=exc)
        self.liveness.died(f"{type(exc).__name__}: {exc}")
        self.exit_code = exit_code or EXIT_AGENT_DIED
        os.kill(os.getpid(), signal.SIGTERM)

    async def _on_shutdown(self, app: faust.App, **_: object) -> None:
        self._stop.set()
        if self.partitions is not None:
            await self.partitions.stopped()
        if self.kafka_consumer is not None:
            await self.kafka_consumer.stop()
        await self.publisher.close()
        await self.router.close()
        await self.dead_letters.close()
        await self.redis.aclose()


async def _start_consumer(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.start()
    except KafkaError as exc:
        raise as_fatigue_error(exc, "starting the scorer's consumer") from exc


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
