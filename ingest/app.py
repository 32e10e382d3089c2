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
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ingest.adapters import crm
from ingest.adapters.sendgrid import load_public_key
from ingest.auth import require_api_keys
from ingest.deps import require_api_key
from ingest.errors import install_error_handlers
from ingest.limits import BodySizeLimit
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
from ingest.routers import adapters, customers, deliveries, events, health, policy, profiles, subscriptions
from services.contract import EventIn
from services.errors import ConfigError
from services.logs import setup_logging
from services.metrics import IngestMetrics
from services.policy.model import PolicyDoc
from services.policy.store import PolicySource
from services.redisio import make_redis
from services.settings import IngestSettings

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
DESCRIPTION = """Record contacts with customers and read their contact-fatigue state.

Every `/v1` route needs `Authorization: Bearer <api key>`. Errors answer
`{"error": {"code": "...", "message": "..."}}`. See docs/api.md.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: IngestSettings = app.state.settings
    app.state.publisher = EventPublisher(settings)
    app.state.redis = make_redis(settings)
    app.state.policy_cache = PolicyCache(PolicySource(app.state.redis, settings.keys))
    try:
        yield
    finally:
        await app.state.publisher.close()
        await app.state.redis.aclose()


def create_app(settings: IngestSettings) -> FastAPI:
    """The API for `settings`; ConfigError when no valid API key is configured."""
    app = FastAPI(title="Contact fatigue API", version="1", description=DESCRIPTION, lifespan=_lifespan)
    app.state.settings = settings
    app.state.api_keys = require_api_keys(settings)
    app.state.registry = CollectorRegistry()
    app.state.metrics = metrics = IngestMetrics(app.state.registry)
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        limit_bytes=settings.max_body_bytes,
        on_refused=lambda: metrics.requests_refused.labels(reason="size").inc(),
    )
    authenticated = [Depends(require_api_key)]
    routers = (events.router, profiles.router, customers.router, subscriptions.router, deliveries.router,
               policy.router)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX, dependencies=authenticated)
    app.include_router(health.router)
    _install_adapters(app, settings, authenticated)
    _document_models(app, [EventIn, PolicyDoc])
    return app


def _install_adapters(app: FastAPI, settings: IngestSettings, authenticated: list[Any]) -> None:
    """Provider adapters (docs/adapters.md): their keys and mappings are checked at start-up
    (ConfigError); the webhook routes authenticate each call themselves, the rejected store is
    behind the API key."""
    try:
        key = settings.sendgrid_verification_key
        app.state.sendgrid_key = None if key is None else load_public_key(key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    app.state.crm_mappings = crm.load_mappings(settings.crm_mappings_dir)
    app.include_router(adapters.webhooks, prefix=API_PREFIX)
    app.include_router(adapters.rejected_router, prefix=API_PREFIX, dependencies=authenticated)


def _document_models(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add models that routes read by hand (not as a parameter) to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            _, defs = models_json_schema(
                [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            _use_error_shape_for_422(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _use_error_shape_for_422(schema: dict[str, Any]) -> None:
    """FastAPI documents its own validation-error body; this API answers with ErrorOut instead."""
    default = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
        content = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
        if content.get("schema") == default:
            content["schema"] = {"$ref": "#/components/schemas/ErrorOut"}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def load_settings() -> IngestSettings:
    """IngestSettings from the environment; ConfigError (naming what to fix) when invalid."""
    settings = IngestSettings.load("API")
    require_api_keys(settings)
    return settings


def main() -> None:
    """Run the API on FATIGUE_HOST:FATIGUE_PORT until interrupted (`fatigue api`).

    Raises ConfigError (the CLI prints it and exits 2) when no valid API key is configured.
    """
    settings = load_settings()
    setup_logging(settings.log_level)
    app = create_app(settings)
    log.info("API listening on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
