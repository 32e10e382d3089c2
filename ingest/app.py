"""The HTTP API: `create_app(settings)` builds it, `main()` runs it (called by `fatigue api`).

Nothing here is module-level state: settings come in, the Kafka publisher and the Redis client are
built in the lifespan and closed with it, metrics live on a registry the app owns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from ingest import openapi
from ingest.accept import AcceptPath
from ingest.adapters import crm
from ingest.adapters.rejected import RejectedStore
from ingest.adapters.sendgrid import load_public_key
from ingest.auth import RateLimiter, require_api_keys
from ingest.dedup import DedupStore
from ingest.deps import NEEDS_ADMIN, NEEDS_INGEST, require_api_key, require_authenticated_routes
from ingest.errors import install_error_handlers
from ingest.identity import IdentityMap
from ingest.limits import BodySizeLimit
from ingest.partition_check import PartitionCountCheck
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
from ingest.routers import adapters, customers, deliveries, events, health, policy, profiles, subscriptions
from ingest.server import server_config
from ingest.telemetry import install_telemetry
from services.contract import EventIn
from services.customer_lists import ListReader
from services.delivery.destinations import Resolver, system_resolver
from services.errors import ConfigError, StoreUnavailable
from services.logs import setup_logging
from services.metrics import IngestMetrics
from services.partitions import check_partition_count
from services.policy.model import PolicyCheck, PolicyDoc
from services.policy.store import PolicySource
from services.redisio import make_redis
from services.settings import IngestSettings
from services.snapshots import CustomerReader

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's built-in OpenTelemetry bridge is off: the API reports through Prometheus (docs/metrics.md),
and with the bridge on every request looks its three OTel providers up in the environment."""
DESCRIPTION = """Record contacts with customers and read their contact-fatigue state.

Every `/v1` route needs `Authorization: Bearer <api key>`. Errors answer
`{"error": {"code": "...", "message": "..."}}`. See docs/api.md.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: IngestSettings = app.state.settings
    app.state.publisher = EventPublisher(settings)
    app.state.redis = make_redis(settings)
    _build_stores(app.state, settings)
    try:
        await check_partition_count(app.state.redis, settings.keys, settings.partitions)
    except StoreUnavailable as exc:  # Redis down: the API starts (503s name it); the scorer checks too
        log.warning("partition count not checked: %s", exc)
    try:
        yield
    finally:
        await app.state.publisher.close()
        await app.state.redis.aclose()


def _build_stores(state: Any, settings: IngestSettings) -> None:
    """What the routes read and write through, built once per app (ingest/deps.py hands them out)."""
    redis = state.redis
    state.policy_cache = PolicyCache(PolicySource(redis, settings.keys), file=settings.policy_file)
    state.customers = CustomerReader(redis, settings.keys, settings.partitions)
    state.lists = ListReader(redis, settings.keys, settings.partitions)
    state.partition_check = PartitionCountCheck(redis, settings.keys, settings.partitions)
    state.dedup = DedupStore(redis, settings.keys, settings.dedup_ttl_s)
    state.accept = AcceptPath(state.publisher, state.dedup, topic=settings.events_topic,
                              max_future_skew_s=settings.max_future_skew_s,
                              claim_wait_s=settings.kafka_request_timeout_s + 1)
    state.identity = IdentityMap(redis, settings.keys, settings.identity_hash_key.get_secret_value().encode())
    state.rejected = RejectedStore(redis, settings.keys, max_entries=settings.adapter_rejected_max,
                                   ttl_s=settings.adapter_rejected_ttl_s)


def create_app(settings: IngestSettings, *, policy_check: PolicyCheck | None = None,
               resolver: Resolver = system_resolver) -> FastAPI:
    """The API for `settings`; ConfigError when no valid API key is configured.

    `policy_check` is what a policy must pass before `PUT /v1/policy` stores it, beyond parsing:
    the `fatigue` command passes the scorer's dry run through its core (scorer/dryrun.py).
    `resolver` resolves webhook hosts for the destination check (tests inject one)."""
    # Swagger UI (/docs) and ReDoc (/redoc) from assets the fastapi-offline package ships: no CDN.
    app = FastAPIOffline(title="Contact fatigue API", version="1", description=DESCRIPTION, lifespan=_lifespan,
                         generate_unique_id_function=openapi.operation_id, telemetry=NO_OPENTELEMETRY)
    app.state.settings = settings
    app.state.policy_check = policy_check
    app.state.resolver = resolver
    app.state.api_keys = require_api_keys(settings)
    app.state.rate_limiter = RateLimiter()
    app.state.registry = CollectorRegistry()
    app.state.metrics = metrics = IngestMetrics(app.state.registry)
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        limit_bytes=settings.max_body_bytes,
        on_refused=lambda: metrics.requests_refused.labels(reason="size").inc(),
    )
    authenticated = Depends(require_api_key)  # the key, its rate and no unknown query parameter
    # A router whose routes all need one scope gets it here; the others declare it per route.
    scoped: tuple[tuple[APIRouter, list[Any]], ...] = (
        (events.router, [NEEDS_INGEST]), (profiles.router, [NEEDS_INGEST]), (customers.router, []),
        (subscriptions.router, [NEEDS_ADMIN]), (deliveries.router, [NEEDS_ADMIN]), (policy.router, []),
    )
    for router, scopes in scoped:
        app.include_router(require_authenticated_routes(router), prefix=API_PREFIX,
                           dependencies=[authenticated, *scopes])
    app.include_router(health.router)
    _install_adapters(app, settings, [authenticated, NEEDS_ADMIN])
    openapi.install(app, [EventIn, PolicyDoc])
    install_telemetry(app, metrics.http)
    return app


def _install_adapters(app: FastAPI, settings: IngestSettings, admin: list[Any]) -> None:
    """Provider adapters (docs/adapters.md): their keys and mappings are checked at start-up
    (ConfigError); the webhook routes authenticate each call themselves (provider signature, URL
    token or an API key with the ingest scope), the rejected store needs an admin key."""
    try:
        key = settings.sendgrid_verification_key
        app.state.sendgrid_key = None if key is None else load_public_key(key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    app.state.crm_mappings = crm.load_mappings(settings.crm_mappings_dir)
    app.state.adapter_rate = settings.parsed_adapter_rate()
    # No unknown-parameter check: providers call back with query strings of their own and ours (?token=).
    app.include_router(adapters.webhooks, prefix=API_PREFIX)
    app.include_router(require_authenticated_routes(adapters.rejected_router), prefix=API_PREFIX, dependencies=admin)


def load_settings() -> IngestSettings:
    """IngestSettings from the environment; ConfigError (naming what to fix) when invalid."""
    settings = IngestSettings.load("API")
    require_api_keys(settings)
    return settings


def _key_secrets(settings: IngestSettings) -> list[str]:
    """The API key secrets as configured (`name:secret[:…]` or a bare secret), for the log redaction."""
    entries = [entry.strip() for entry in settings.api_keys.get_secret_value().split(",") if entry.strip()]
    secrets = [entry.split(":")[1] if ":" in entry else entry for entry in entries]
    return [secret for secret in secrets if not secret.startswith("sha256=")]


def main(policy_check: PolicyCheck | None = None) -> None:
    """Run the API on FATIGUE_HOST:FATIGUE_PORT until interrupted (`fatigue api`).

    Raises ConfigError (the CLI prints it and exits 2) when no valid API key is configured.
    """
    settings = load_settings()
    setup_logging(settings.log_level, service="api", fmt=settings.log_format, known_secrets=_key_secrets(settings))
    app = create_app(settings, policy_check=policy_check)
    log.info("API listening on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.Server(server_config(app, settings)).run()
