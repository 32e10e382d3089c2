"""Settings: one pydantic-settings class per deployable, built in `main` and passed down.

Environment variables are documented in docs/configuration.md. Kafka and Redis locations use the
conventional unprefixed names (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL); everything else is FATIGUE_*.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services import names
from services.apikeys import ApiKey, Rate, parse_api_keys
from services.errors import ConfigError
from services.logs import LogFormat
from services.names import RedisKeys, topic
from services.redis_url import is_cluster_url
from services.redisio import redis_url_problem
from services.stored_values import StoreFormat

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KAFKA_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
KAFKA_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_KAFKA_SASL_FIELDS = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
_KAFKA_SSL_FILE_FIELDS = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")


class CommonSettings(BaseSettings):
    """What every service needs: where Kafka and Redis are and how topics are named."""

    # hide_input_in_errors: a validation error must not echo the environment it was given (passwords).
    model_config = SettingsConfigDict(
        env_prefix="FATIGUE_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    topic_prefix: str = "fatigue."
    redis_prefix: str = "fatigue:"
    redis_wait_replicas: int | None = Field(default=None, ge=0, le=16)
    """Replicas that must acknowledge a write (Redis WAIT) before a consumer commits the Kafka offset it
    depends on (the notifier's scheduled deliveries). Unset: 1 on a Redis Cluster, 0 on one Redis."""
    redis_wait_timeout_ms: int = Field(default=2000, ge=1, le=60_000)
    """How long that WAIT may take; fewer acknowledgements by then is a store outage (retried)."""
    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    kafka_idempotence: bool = False
    """aiokafka's idempotent producer; on for real Kafka, off for the embedded broker (it refuses it)."""
    kafka_request_timeout_s: float = Field(default=10.0, gt=0)
    kafka_max_request_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    """The largest record a producer sends (aiokafka's `max_request_size`, checked before sending). Keep it
    at or below the topics' `max.message.bytes` (Kafka's default: 1,048,588). A larger record is refused
    on its own (dead-lettered, or a 413 at the API), never retried (services/kafka_errors.py)."""
    broker_session_timeout_s: float = Field(default=30.0, gt=0)
    broker_heartbeat_interval_s: float = Field(default=3.0, gt=0)
    broker_rebalance_timeout_s: float = Field(default=60.0, gt=0)
    """Consumer-group timeouts (scorer and notifier). `fatigue up` shortens them on the embedded broker."""
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    """Longest a consumer fetch waits for data (scorer and notifier); `fatigue up` on embedded: 50."""
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    """`json` (one object per line) or `text`; `fatigue up` in a terminal sets `text` (services/logs.py)."""
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    """How every Kafka client connects: TLS (SSL, SASL_SSL) and/or SASL authentication (SASL_*)."""
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    """PEM CA certificates that sign the brokers' certificates (unset: the system's CAs)."""
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    """Client certificate and its private key (PEM) for mutual TLS; set both or neither."""
    kafka_ssl_key_password: SecretStr | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_url_usable(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_servers_usable(cls, value: str) -> str:
        problem = bootstrap_servers_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("kafka_security_protocol", mode="before")
    @classmethod
    def _protocol_upper_case(cls, value: object) -> object:
        return (value.strip().upper() or "PLAINTEXT") if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format_lower_case(cls, value: object) -> object:
        return (value.strip().lower() or "json") if isinstance(value, str) else value

    @field_validator("kafka_sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_upper_case(cls, value: object) -> object:
        return (value.strip().upper() or None) if isinstance(value, str) else value

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", *_KAFKA_SSL_FILE_FIELDS, "kafka_ssl_key_password", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (e.g. an empty key of a Kubernetes Secret) counts as not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        problems = _kafka_sasl_problems(self) + _kafka_ssl_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def load(cls, what: str, env: Mapping[str, str] | None = None) -> Self:
        """From the environment (or `env`, see `from_env`), for an entry point: ConfigError with one
        line naming each invalid variable and why (the CLI prints it and exits 2) instead of a
        pydantic traceback; values are never repeated (they may be secrets). `what`: e.g. "notifier"."""
        try:
            return cls() if env is None else cls.from_env(env)
        except ValidationError as exc:
            raise ConfigError(f"invalid {what} settings: {describe_invalid(cls, exc)}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build from an explicit environment mapping (the supervisor's and the tests' children)."""
        values: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            aliases = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else []
            keys = [str(a) for a in aliases if str(a).isupper()] or [f"FATIGUE_{name.upper()}"]
            for key in keys:
                if key in env:
                    values[name] = env[key]
        return cls.model_validate(values)

    @property
    def events_topic(self) -> str:
        return topic(self.topic_prefix, names.EVENTS_TOPIC)

    @property
    def profiles_topic(self) -> str:
        return topic(self.topic_prefix, names.PROFILES_TOPIC)

    @property
    def actions_topic(self) -> str:
        return topic(self.topic_prefix, names.ACTIONS_TOPIC)

    @property
    def dead_letter_topic(self) -> str:
        return topic(self.topic_prefix, names.DEAD_LETTER_TOPIC)

    @property
    def intake_topic(self) -> str:
        return topic(self.topic_prefix, names.INTAKE_TOPIC)

    @property
    def redis_cluster(self) -> bool:
        """REDIS_URL names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
        return is_cluster_url(self.redis_url)

    @property
    def wait_replicas(self) -> int:
        """FATIGUE_REDIS_WAIT_REPLICAS, or its default for REDIS_URL (a Cluster has a replica per primary)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_cluster else 0

    @property
    def keys(self) -> RedisKeys:
        """The key layout for REDIS_URL: on a Cluster, keys written together share a hash tag (services/names.py)."""
        return RedisKeys(self.redis_prefix, cluster=self.redis_cluster)


def _env_name(field: str) -> str:
    return f"FATIGUE_{field.upper()}"


def env_variable(cls: type[CommonSettings], field: str) -> str:
    """The environment variable a field is read from (REDIS_URL, FATIGUE_PARTITIONS, ...)."""
    info = cls.model_fields.get(field)
    if info is None:  # an error located by the alias it was read from
        return field if field.isupper() else _env_name(field)
    alias = info.validation_alias
    names = [str(a) for a in alias.choices if str(a).isupper()] if isinstance(alias, AliasChoices) else []
    return names[0] if names else _env_name(field)


def describe_invalid(cls: type[CommonSettings], exc: ValidationError) -> str:
    """One line: `VARIABLE: reason` per problem, joined with "; " (no input values)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        reason = str(error["msg"]).removeprefix("Value error, ")
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{env_variable(cls, field)}: {reason}" if field else reason)
    return "; ".join(problems)


def bootstrap_servers_problem(servers: str) -> str | None:
    """What is wrong with KAFKA_BOOTSTRAP_SERVERS (comma-separated host[:port]), or None."""
    entries = [entry.strip() for entry in servers.split(",")]
    if not any(entries):
        return "is empty; expected host:port[,host:port...]"
    for entry in entries:
        port = _port_of(entry)
        if port is None:
            return "expected comma-separated host:port entries (no scheme, no spaces), e.g. kafka-1:9092,kafka-2:9092"
        if port and not 0 < int(port) < 65536:
            return "a port is outside 1-65535"
    return None


def _port_of(entry: str) -> str | None:
    """The port text of `host[:port]` or `[v6]:port` ("" when none); None when the entry is malformed."""
    if not entry or "://" in entry or any(c.isspace() for c in entry):
        return None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return port if host and (rest == "" or (rest.startswith(":") and port.isdigit())) else None
    if entry.count(":") != 1:
        return "" if entry.count(":") == 0 else None
    host, _, port = entry.partition(":")
    return port if host and port.isdigit() else None


def _kafka_sasl_problems(s: CommonSettings) -> list[str]:
    protocol = f"FATIGUE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    given = [_env_name(name) for name in _KAFKA_SASL_FIELDS if getattr(s, name) is not None]
    if s.kafka_security_protocol not in KAFKA_SASL_PROTOCOLS:
        if given:
            return [f"{', '.join(given)} set, but {protocol} does not use SASL (use SASL_SSL, or unset them)"]
        return []
    missing = [_env_name(name) for name in _KAFKA_SASL_FIELDS if getattr(s, name) is None]
    if missing:
        return [f"{protocol} needs {', '.join(missing)} (mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"]
    return []


def _kafka_ssl_problems(s: CommonSettings) -> list[str]:
    protocol = f"FATIGUE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    given = [name for name in (*_KAFKA_SSL_FILE_FIELDS, "kafka_ssl_key_password") if getattr(s, name) is not None]
    if s.kafka_security_protocol not in KAFKA_TLS_PROTOCOLS:
        if given:
            names = ", ".join(_env_name(name) for name in given)
            return [f"{names} set, but {protocol} does not use TLS (use SSL or SASL_SSL, or unset them)"]
        return []
    problems = [_file_problem(name, getattr(s, name)) for name in _KAFKA_SSL_FILE_FIELDS if getattr(s, name)]
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        problems.append("FATIGUE_KAFKA_SSL_CERTFILE and FATIGUE_KAFKA_SSL_KEYFILE go together (mutual TLS): set both")
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_keyfile is None:
        problems.append("FATIGUE_KAFKA_SSL_KEY_PASSWORD set without FATIGUE_KAFKA_SSL_KEYFILE")
    return [problem for problem in problems if problem]


def _file_problem(field: str, path: Path) -> str:
    if not path.is_file():
        return f"{_env_name(field)}={path}: no such file (or not a regular file)"
    if not os.access(path, os.R_OK):
        return f"{_env_name(field)}={path}: not readable by this process"
    return ""


class IngestSettings(CommonSettings):
    """The HTTP API (ingest/)."""

    api_keys: SecretStr = SecretStr("")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_events_per_request: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    """Events dated further in the future than this are refused (clock skew upstream)."""
    policy_file: Path | None = None
    """As the scorer's FATIGUE_POLICY_FILE: the policy in force while none is stored through the API, so
    that decisions and explanations apply the same policy as the scorer (give both the same file)."""
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    allow_private_destinations: bool = False
    allow_loopback_destinations: bool = False

    api_rate_limit: str | None = None
    """Default per-key rate for keys that name none (e.g. 200/s); unset: unlimited. A request counts
    one, each event or record of a request that carries them counts one (docs/api.md#rate-limits)."""

    # ---- the HTTP server (ingest/server.py, docs/configuration.md#http-server) ----
    http_max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Request line and header fields together, in bytes; over it: 431 and the connection closed."""
    http_max_headers: int = Field(default=100, ge=8, le=10_000)
    """Header fields in one request; over it: 431."""
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """The whole request head within this of the connection opening (or of a later request's first byte): 408."""
    http_body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """The whole request body within this of the end of its head: 408."""
    http_keepalive_timeout_s: int = Field(default=5, ge=1, le=3600)
    """An idle kept-alive connection is closed after this many seconds."""

    def parsed_api_keys(self) -> list[ApiKey]:
        """ValueError naming the entry when FATIGUE_API_KEYS or FATIGUE_API_RATE_LIMIT is invalid."""
        default_rate = Rate.parse(self.api_rate_limit) if self.api_rate_limit else None
        return parse_api_keys(self.api_keys.get_secret_value(), default_rate)

    # ---- intake (issue 12): identity map and provider adapters (docs/adapters.md) ----
    identity_hash_key: SecretStr = SecretStr("")
    """HMAC key for the identity map's hashed emails and phones; set a random one in production."""
    identity_default_region: str | None = Field(default=None, min_length=2, max_length=2)
    """ISO 3166 region (e.g. US, CN) for phone numbers written without +country code; unset: E.164 only."""
    sendgrid_verification_key: str | None = None
    """SendGrid signed Event Webhook public key (base64 DER, as SendGrid shows it): signatures required."""
    sendgrid_token: SecretStr | None = None
    mailgun_signing_key: SecretStr | None = None
    """Mailgun HTTP webhook signing key: every call's `signature` is verified."""
    mailgun_token: SecretStr | None = None
    mailgun_replay_window_s: int = Field(default=300, ge=1, le=86_400)
    """A Mailgun signature older (or newer) than this is refused; a token is accepted once within it."""
    sendgrid_replay_window_s: int = Field(default=300, ge=1, le=86_400)
    """A SendGrid signature whose timestamp is further than this from now (either side) is refused."""
    twilio_auth_token: SecretStr | None = None
    """Twilio account auth token: every call's X-Twilio-Signature is verified."""
    twilio_token: SecretStr | None = None
    twilio_public_base_url: str | None = None
    """The URL Twilio calls up to the path (https://fatigue.example.com), when a proxy changes it."""
    crm_token: SecretStr | None = None
    crm_mappings_dir: Path | None = None
    """More CRM mapping files (*.yaml) besides the shipped hubspot-*/salesforce-* ones."""
    adapter_max_records: int = Field(default=10_000, ge=1, le=1_000_000)
    """Items in one provider webhook request (a SendGrid batch); more: 413, nothing ingested. CRM
    requests are bounded by max_events_per_request like POST /v1/events."""
    adapter_rate_limit: str | None = None
    """Rate of each provider credential (signature or URL token), e.g. 500/s, counting items; unset: unlimited."""
    adapter_rejected_max: int = Field(default=10_000, ge=1, le=1_000_000)
    adapter_rejected_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """Provider events no customer was found for are kept this long, at most this many (newest)."""

    @field_validator("sendgrid_verification_key", "identity_default_region", "twilio_public_base_url",
                     "adapter_rate_limit", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("adapter_rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            Rate.parse(value)  # ValueError: "rate '…' is not like 100/s, 6000/m or 50000/h"
        return value

    def parsed_adapter_rate(self) -> Rate | None:
        return None if self.adapter_rate_limit is None else Rate.parse(self.adapter_rate_limit)

    @field_validator("sendgrid_token", "mailgun_signing_key", "mailgun_token", "twilio_auth_token", "twilio_token",
                     "crm_token", mode="before")
    @classmethod
    def _short_secret(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and len(value) < 16 and value.strip():
            raise ValueError("must be at least 16 characters")
        return value


DEFAULT_TIMER_SETTLE_S = 30.0
"""FATIGUE_TIMER_SETTLE_S's default; also `fatigue backtest --settle`'s."""


class ScorerSettings(CommonSettings):
    """The stream processor (scorer/)."""

    scorer_app_id: str = "fatigue-scorer"
    policy_file: Path | None = None
    """A policy YAML; the packaged default (services/policy/policy.yaml) when unset."""
    policy_poll_s: float = Field(default=2.0, gt=0)
    """How often the stored policy version (PUT /v1/policy) and the policy file's mtime are checked."""
    tick_interval_s: float = Field(default=1.0, gt=0)
    """How often due timers (re_engage, window expiry) are checked."""
    batch_max_events: int = Field(default=500, ge=1)
    web_port: int = Field(default=6066, ge=0, le=65535)
    """Faust web server port for /metrics and /healthz (0: no web server)."""
    web_host: str = "127.0.0.1"
    data_dir: Path = Path(".fatigue/scorer")
    stall_s: float = Field(default=300.0, gt=0)
    """/healthz fails when a batch (outage retries included) or the timer loop is stuck this long."""
    store_format: StoreFormat = "zstd"
    """How customer states and snapshots are written to Redis: `zstd` (base64 of a zstd frame with the
    shipped dictionary, about a quarter of the JSON) or `json` (readable with redis-cli). Every
    reader accepts both (services/stored_values.py)."""
    state_cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    """Customer states a worker keeps decoded after committing them (scorer/state_cache.py), ~11 KiB
    each; 0: decode every state read."""
    timer_settle_s: float = Field(default=DEFAULT_TIMER_SETTLE_S, ge=0, le=86_400)
    """A customer's due timers fire by the clock no sooner than this after the latest arrival of one of
    their events (they are evaluated at their due time whatever it is): history sent over some seconds
    — an import, a late batch — is evaluated in event time before the clock fires anything, and the
    rep hears only where it leaves the customer (docs/architecture.md)."""


class NotifierSettings(CommonSettings):
    """The webhook sender (notifier/)."""

    notifier_group_id: str = "fatigue-notifier"
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    retry_schedule_s: Annotated[list[float], NoDecode] = Field(
        default=[0.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 14400.0], min_length=1, max_length=50
    )
    """Wait before each attempt of a delivery (the first usually 0); its length is the attempt count."""
    delivery_concurrency: int = Field(default=32, ge=1, le=1024)
    """Deliveries in flight at once (each to one subscription)."""
    delivery_concurrency_per_endpoint: int = Field(default=4, ge=1, le=1024)
    """Deliveries in flight at once to one subscription (per notifier); the rest wait their turn."""
    circuit_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failed attempts to one endpoint that open its circuit."""
    circuit_open_s: float = Field(default=30.0, gt=0)
    """How long an opened circuit holds deliveries back before one probe goes through; doubles after
    each failed probe, up to circuit_open_max_s."""
    circuit_open_max_s: float = Field(default=600.0, gt=0)
    endpoint_disable_after_s: float = Field(default=24 * 3600.0, gt=0)
    """An endpoint failing this long without one successful delivery gets its subscription disabled."""
    scheduler_poll_s: float = Field(default=0.2, gt=0)
    """How often due deliveries are looked for when there were none."""

    @field_validator("retry_schedule_s", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        """`0,5,30` or a JSON list `[0, 5, 30]` from the environment; every step >= 0."""
        if isinstance(value, str):
            value = [part for part in value.strip().strip("[]").split(",") if part.strip()]
        return value

    @field_validator("retry_schedule_s")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(step < 0 for step in value):
            raise ValueError("retry_schedule_s steps must be >= 0 seconds")
        return value
    allow_private_destinations: bool = False
    allow_loopback_destinations: bool = False
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Serve /metrics on this port (0: do not serve)."""
    metrics_host: str = "127.0.0.1"
    delivered_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    dead_letter_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    """How long a dead-lettered (failed) delivery is kept, from the time it failed; a retry clears it."""


# ---- intake (issue 12): the Kafka intake consumer and `fatigue import` ----


class IntakeSettings(CommonSettings):
    """The Kafka intake consumer (`fatigue intake`): intake topic -> validated -> events topic."""

    intake_group_id: str = "fatigue-intake"
    intake_producer: str = Field(default="kafka", min_length=1, max_length=100)
    """Producer name for records without a `producer` header (event ids are unique per producer)."""
    intake_batch_max: int = Field(default=500, ge=1, le=10_000)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    retry_backoff_s: float = Field(default=1.0, gt=0)
    """Wait before retrying a batch in place while Kafka or Redis is down."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Serve /metrics and /healthz on this port (0: do not serve)."""
    metrics_host: str = "127.0.0.1"


class ImportSettings(CommonSettings):
    """`fatigue import`: where to write (Kafka, Redis for de-duplication) and the contract's skew."""

    max_future_skew_s: float = Field(default=300.0, ge=0)
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    timer_settle_s: float = Field(default=DEFAULT_TIMER_SETTLE_S, ge=0, le=86_400)
    """The scorer's FATIGUE_TIMER_SETTLE_S: how long after the import the customers' messages are decided."""
