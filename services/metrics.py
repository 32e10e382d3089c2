"""Prometheus metric definitions for all services, in one place (documented in docs/metrics.md).

Each service builds its metrics on a registry it owns (`IngestMetrics(registry)` …), so tests and
several apps in one process never collide on the global registry.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from prometheus_client import GC_COLLECTOR, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from services.delivery.health import STATES as ENDPOINT_STATES
from services.delivery.subscriptions import FORMATS as SUBSCRIPTION_FORMATS
from services.errors import RecordRefused
from services.kafka_errors import RECORD_REASONS
from services.names import ACTION_TYPES, WITHHELD_REASONS
from services.policy.decision import DECIDING_RULES

LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_RECORDS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
"""Records per scorer batch: the default FATIGUE_BATCH_MAX_EVENTS (500) is a bucket bound."""


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "fatigue_ingest_events_total",
            "Events received by the API, by outcome (accepted, duplicate, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.requests_refused = Counter(
            "fatigue_ingest_requests_refused_total",
            "Whole requests refused, by reason (auth, forbidden, rate_limited, body, size, broker_unavailable, "
            "broker_misconfigured; by the HTTP server: header_too_large, header_timeout, body_timeout).",
            ["reason"],
            registry=registry,
        )
        self.publish_latency = Histogram(
            "fatigue_ingest_publish_seconds",
            "Time from request to broker acknowledgement (acks=all) of a batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.profiles = Counter(
            "fatigue_ingest_profiles_total", "Profiles accepted.", registry=registry
        )
        # ---- intake (issue 12): provider adapters ----
        self.adapter_events = Counter(
            "fatigue_ingest_adapter_events_total",
            "Provider items received by the adapters, by provider and outcome (accepted, duplicate, "
            "unmapped: no customer found, kept in the rejected store; invalid: refused by the contract, kept "
            "there too; ignored: not a contact, e.g. a deferred email).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.adapter_refused = Counter(
            "fatigue_ingest_adapter_requests_refused_total",
            "Adapter requests refused with nothing ingested, by provider and reason (signature, replay, "
            "unauthenticated, rate_limited, too_many_records, body, broker_unavailable).",
            ["provider", "reason"],
            registry=registry,
        )
        # ---- pre-send decisions (issue 17): what vendors show as skipped / aborted sends ----
        self.decisions = Counter(
            "fatigue_api_decisions_total",
            "Pre-send decisions answered (GET /v1/customers/{id}/decision), by outcome (allow, defer, deny) and "
            "the rule that decided (the first reason; `none`: allowed without any). Rules: docs/metrics.md.",
            ["outcome", "rule"],
            registry=registry,
        )
        self.http = HttpMetrics(registry)
        self.refused_records = refused_records(registry, REFUSED_STAGES_API)
        install_defaults(registry, "api")
        zero(self.events, INGEST_OUTCOMES)
        zero(self.requests_refused, REFUSAL_REASONS)
        for outcome, rules in DECIDING_RULES.items():
            zero(self.decisions, (outcome,), rules)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "fatigue_scorer_events_total",
            "Records processed by the scorer, by outcome "
            "(counted, duplicate, late, replayed, bad_record, profile).",
            ["outcome"],
            registry=registry,
        )
        self.actions = Counter(
            "fatigue_scorer_actions_total", "Actions sent to the rep (published), by type.", ["type"],
            registry=registry,
        )
        self.actions_withheld = Counter(
            "fatigue_scorer_actions_withheld_total",
            "Transitions recorded but not sent, by reason: superseded (a later one of the same customer, "
            "made before anything was sent, says where they are), ended (over before it could be told), "
            "unseen (a recovery from a throttle the rep was never told of).",
            ["reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "fatigue_scorer_batch_seconds",
            "Time to process one batch (state read, core, actions published, state committed).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.batch_records = Histogram(
            "fatigue_scorer_batch_records",
            "Records (events and profiles) in one batch of one partition: far below FATIGUE_BATCH_MAX_EVENTS "
            "while the scorer is behind means every per-batch cost is paid more often than designed.",
            buckets=BATCH_RECORDS_BUCKETS,
            registry=registry,
        )
        self.timers_fired = Counter(
            "fatigue_scorer_timers_fired_total",
            "Customers re-evaluated because a due time passed.",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "fatigue_scorer_event_lag_seconds",
            "Processing time minus API arrival time of the oldest event of the last batch.",
            registry=registry,
        )
        self.fenced = Counter(
            "fatigue_scorer_fenced_total",
            "Commits refused because another worker claimed the partition since (this one gave it up and "
            "rejoined its group): a rebalance, a session that expired, an admin command claiming it.",
            registry=registry,
        )
        self.policy_version = Gauge(
            "fatigue_scorer_policy_version",
            "Version of the stored policy (PUT /v1/policy) in force; 0 while the file or packaged default is.",
            registry=registry,
        )
        self.policy_reload_failures = Counter(
            "fatigue_scorer_policy_reload_failures_total",
            "Policies refused, by source: store or file (the new document is invalid or fails the dry run), "
            "runtime (the core failed with it on live data); the previous policy stays in force.",
            ["source"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "fatigue_scorer_dead_letters_total",
            "Records sent to the dead-letter topic instead of stopping the stream, by stage "
            "(scorer.decode: not a valid record; scorer.process: the core failed on it; scorer.publish: an "
            "action the actions topic refused, too large; scorer.reroute: a record re-published to its "
            "customer's partition that the topic refused).",
            ["stage"],
            registry=registry,
        )
        self.rerouted = Counter(
            "fatigue_scorer_records_rerouted_total",
            "Records found in a partition their customer is not in (a producer not partitioning by murmur2 of "
            "the customer id, or on an old partition count), re-published to the customer's partition, by topic.",
            ["topic"],
            registry=registry,
        )
        self.timer_failures = Counter(
            "fatigue_scorer_timer_failures_total",
            "Due timers of one customer the core failed on; the timer is postponed by an hour.",
            registry=registry,
        )
        self.state_cache = Counter(
            "fatigue_scorer_state_cache_total",
            "Customer states a batch read, by result: hit (the worker's decoded copy of the stored value "
            "was used) or miss (decoded from Redis: first read, evicted, or written by someone else).",
            ["result"],
            registry=registry,
        )
        self.consumer = ConsumerMetrics(registry)
        self.refused_records = refused_records(registry, REFUSED_STAGES_SCORER)
        self.count_refused_letter = refused_letter_counter(self.refused_records, "scorer.dead_letter")
        install_defaults(registry, "scorer")
        zero(self.events, SCORER_OUTCOMES)
        zero(self.actions, ACTION_TYPES)
        zero(self.actions_withheld, WITHHELD_REASONS)
        zero(self.policy_reload_failures, POLICY_SOURCES)
        zero(self.dead_letters, DEAD_LETTER_STAGES)
        zero(self.state_cache, ("hit", "miss"))


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "fatigue_notifier_deliveries_total",
            "Webhook deliveries finished, by outcome (delivered, failed, refused, duplicate) and subscription "
            "format (standard, slack, …; unknown when the subscription is gone).",
            ["outcome", "format"],
            registry=registry,
        )
        self.attempts = Counter(
            "fatigue_notifier_attempts_total",
            "HTTP attempts by result class (2xx, 3xx, 4xx, 5xx, timeout, error).",
            ["result"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "fatigue_notifier_delivery_seconds",
            "Time from action creation to successful delivery.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.retries = Counter(
            "fatigue_notifier_retries_total",
            "Failed attempts rescheduled for a later retry.",
            registry=registry,
        )
        self.pending_deliveries = Gauge(
            "fatigue_notifier_pending_deliveries",
            "Deliveries scheduled and not yet delivered or dead-lettered (all notifiers).",
            registry=registry,
        )
        self.dead_letter_deliveries = Gauge(
            "fatigue_notifier_dead_letter_deliveries",
            "Deliveries in the dead-letter store (GET /v1/deliveries?status=failed).",
            registry=registry,
        )
        self.deferred = Counter(
            "fatigue_notifier_deferred_total",
            "Deliveries held back without spending an attempt, by reason (rate_limit: the subscription's "
            "rate_limit_per_minute; endpoint_busy: per-endpoint concurrency cap; circuit_open).",
            ["reason"],
            registry=registry,
        )
        self.digested = Counter(
            "fatigue_notifier_digested_total",
            "Alerts folded into a per-rep digest instead of being sent on their own, by subscription format.",
            ["format"],
            registry=registry,
        )
        self.circuit_opened = Counter(
            "fatigue_notifier_circuit_opened_total",
            "Times an endpoint's circuit opened after consecutive failed attempts (or a failed probe).",
            registry=registry,
        )
        self.endpoints_disabled = Counter(
            "fatigue_notifier_endpoints_disabled_total",
            "Subscriptions disabled by the notifier because their endpoint kept failing.",
            registry=registry,
        )
        self.endpoints = Gauge(
            "fatigue_notifier_endpoints",
            "Subscriptions by endpoint state (healthy, failing, circuit_open, disabled).",
            ["state"],
            registry=registry,
        )
        self.bad_records = Counter(
            "fatigue_notifier_bad_records_total",
            "Action records the notifier could not dispatch (not an action, or dispatching failed on them), "
            "sent to the dead-letter topic (stage notifier.dispatch).",
            registry=registry,
        )
        self.consumer = ConsumerMetrics(registry)
        self.refused_records = refused_records(registry, REFUSED_STAGES_NOTIFIER)
        self.count_refused_letter = refused_letter_counter(self.refused_records, "notifier.dead_letter")
        install_defaults(registry, "notifier")
        zero(self.deliveries, DELIVERY_OUTCOMES, [*SUBSCRIPTION_FORMATS, "unknown"])
        zero(self.attempts, ATTEMPT_RESULTS)
        zero(self.deferred, DEFER_REASONS)
        zero(self.digested, SUBSCRIPTION_FORMATS)
        zero(self.endpoints, ENDPOINT_STATES)


# ---- intake (issue 12): the Kafka intake consumer (`fatigue intake`) ----


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "fatigue_intake_records_total",
            "Records read from the intake topic, by outcome (accepted, duplicate; invalid: sent to the "
            "dead-letter topic with the reason; refused: a valid event the events topic refused, too large, "
            "dead-lettered too).",
            ["outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "fatigue_intake_retries_total",
            "Batches retried in place (nothing committed meanwhile), by reason: broker_unavailable (a Kafka "
            "outage, never a refused record), in_flight (another writer is storing the same event ids).",
            ["reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "fatigue_intake_batch_seconds",
            "Time to validate, de-duplicate, forward (acks=all) and commit one batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.last_poll = Gauge(
            "fatigue_intake_last_poll_timestamp_seconds",
            "When the consumer loop last polled the intake topic (stale: the loop is stuck, or a batch is "
            "retried in place).",
            registry=registry,
        )
        self.refused_records = refused_records(registry, REFUSED_STAGES_INTAKE)
        self.dead_letters = Counter(
            "fatigue_intake_dead_letters_total",
            "Intake records sent to the dead-letter topic instead of stopping the stream, by stage "
            "(intake.validate: not one valid contract-v1 event; intake.forward: a valid event the events topic "
            "refused for its own properties); the same alerts as the scorer's watch it.",
            ["stage"],
            registry=registry,
        )
        self.consumer = ConsumerMetrics(registry)
        install_defaults(registry, "intake")
        self.count_refused_letter = refused_letter_counter(self.refused_records, "intake.dead_letter")
        zero(self.records, INTAKE_OUTCOMES)
        zero(self.dead_letters, INTAKE_DEAD_LETTER_STAGES)
        zero(self.retries, INTAKE_RETRY_REASONS)


# ---- Operations (issue 13): defaults on every registry, HTTP RED, consumer lag, zero series ----

# The known values of each label, created at zero so that `rate()` and `increase()` see the first
# occurrence (a series that appears with the value 1 has no increase to show).
INGEST_OUTCOMES = ("accepted", "duplicate", "rejected")
REFUSAL_REASONS = ("auth", "body", "size", "broker_unavailable", "broker_misconfigured", "header_too_large",
                   "header_timeout", "body_timeout")
SCORER_OUTCOMES = ("counted", "duplicate", "late", "replayed", "bad_record", "profile")
POLICY_SOURCES = ("store", "file", "runtime")
DEAD_LETTER_STAGES = ("scorer.decode", "scorer.process", "scorer.publish", "scorer.reroute")
INTAKE_DEAD_LETTER_STAGES = ("intake.validate", "intake.forward")
DELIVERY_OUTCOMES = ("delivered", "failed", "refused", "duplicate")
ATTEMPT_RESULTS = ("2xx", "3xx", "4xx", "5xx", "timeout", "error")
DEFER_REASONS = ("rate_limit", "endpoint_busy", "circuit_open")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HTTP_UNMATCHED_ROUTE = "unmatched"
"""The `route` label of a request that matched no route (a 404): paths never become labels."""

INTAKE_OUTCOMES = ("accepted", "duplicate", "invalid", "refused")
INTAKE_RETRY_REASONS = ("broker_unavailable", "in_flight")
REFUSED_STAGES_API = ("api.publish",)
REFUSED_STAGES_INTAKE = ("intake.fetch", "intake.forward", "intake.dead_letter")
REFUSED_STAGES_SCORER = ("scorer.actions", "scorer.dead_letter", "scorer.reroute")
REFUSED_STAGES_NOTIFIER = ("notifier.dead_letter",)
"""Where a record refused by the brokers for its own properties was being sent (docs/metrics.md)."""

BUILD_INFO = "fatigue_build_info"
DISTRIBUTION = "contact-fatigue"


def zero(metric: MetricWrapperBase, *label_values: Sequence[str]) -> None:
    """Create the series of every combination of `label_values` (one sequence per label) at 0."""
    combos: list[tuple[str, ...]] = [()]
    for values in label_values:
        combos = [(*combo, value) for combo in combos for value in values]
    for combo in combos:
        metric.labels(*combo)


def version() -> str:
    """The installed version of this project ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def install_defaults(registry: CollectorRegistry, service: str) -> None:
    """Process, platform (Python) and GC collectors and `fatigue_build_info`, once per registry."""
    if getattr(registry, "_fatigue_defaults", None):
        return
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)
    info = Gauge(BUILD_INFO, "Always 1: the version of contact-fatigue and of Python this process runs, and which "
                 "service it is.", ["version", "python_version", "service"], registry=registry)
    info.labels(version(), platform.python_version(), service).set(1)
    registry._fatigue_defaults = service  # type: ignore[attr-defined]


def refused_records(registry: CollectorRegistry, stages: Sequence[str]) -> Counter:
    """`fatigue_records_refused_total{stage, reason}` of one service, every series created at 0."""
    counter = Counter(
        "fatigue_records_refused_total",
        "Records the Kafka brokers (or the producer's own size check) refused for their own properties, by "
        "stage and reason (too_large, invalid): never retried; dead-lettered, or answered 4xx by the API.",
        ["stage", "reason"],
        registry=registry,
    )
    zero(counter, stages, RECORD_REASONS)
    return counter


def refused_letter_counter(counter: Counter, stage: str) -> Callable[[RecordRefused], None]:
    """The `on_refused` callback of a KafkaDeadLetterSink: counts a refused letter under `stage`."""
    def count(error: RecordRefused) -> None:
        counter.labels(stage=stage, reason=error.reason).inc()
    return count


class HttpMetrics:
    """Rate, errors and duration of the API's requests, per route template (never the raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "fatigue_http_requests_total",
            "HTTP requests answered by the API, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "fatigue_http_request_duration_seconds",
            "Time from the request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    def known_routes(self, routes: Iterable[tuple[str, str]]) -> None:
        """Create each (method, route)'s duration series and its `500` count at zero, so an error ratio
        and its alert see the first 5xx."""
        for method, route in routes:
            self.duration.labels(method, route)
            self.requests.labels(method, route, "500")


class ConsumerMetrics:
    """Per topic-partition lag and position of a Kafka consumer group (scorer, notifier)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "fatigue_consumer_lag_records",
            "Records not yet consumed: the partition's high watermark minus the consumer's position, per "
            "consumer group and assigned topic-partition.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.position = Gauge(
            "fatigue_consumer_position",
            "The consumer's position (next offset to read) per assigned topic-partition; stands still "
            "when the consumer does not progress.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "fatigue_consumer_assigned_partitions",
            "Topic-partitions assigned to this process by its consumer group.",
            ["group"],
            registry=registry,
        )
