"""Annotated dependencies: everything a route needs comes from the app built by create_app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from ingest.auth import match_api_key
from ingest.dedup import DedupStore
from ingest.errors import ApiError
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
from services.customer_lists import ListReader
from services.delivery.health import EndpointHealthStore
from services.delivery.subscriptions import SubscriptionStore
from services.metrics import IngestMetrics
from services.policy.store import PolicyStore
from services.settings import ApiKey, IngestSettings
from services.snapshots import SnapshotReader

bearer = HTTPBearer(
    auto_error=False, description="One of the keys configured in FATIGUE_API_KEYS (the part after `name:`)."
)


def get_settings(request: Request) -> IngestSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_metrics(request: Request) -> IngestMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def get_publisher(request: Request) -> EventPublisher:
    return request.app.state.publisher  # type: ignore[no-any-return]


def get_redis(request: Request) -> Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
RedisDep = Annotated[Redis, Depends(get_redis)]


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    metrics: MetricsDep,
) -> ApiKey:
    """The caller's API key; 401 with `WWW-Authenticate: Bearer` when absent or unknown."""
    key = match_api_key(credentials.credentials if credentials else None, request.app.state.api_keys)
    if key is None:
        metrics.requests_refused.labels(reason="auth").inc()
        message = "API key not recognised" if credentials else "missing header Authorization: Bearer <api key>"
        raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


def get_dedup(redis: RedisDep, settings: SettingsDep) -> DedupStore:
    return DedupStore(redis, settings.keys, settings.dedup_ttl_s)


def get_snapshots(redis: RedisDep, settings: SettingsDep) -> SnapshotReader:
    return SnapshotReader(redis, settings.keys)


def get_subscriptions(redis: RedisDep, settings: SettingsDep) -> SubscriptionStore:
    return SubscriptionStore(redis, settings.keys)


def get_policy_cache(request: Request) -> PolicyCache:
    return request.app.state.policy_cache  # type: ignore[no-any-return]


PolicyCacheDep = Annotated[PolicyCache, Depends(get_policy_cache)]


def get_policy_store(redis: RedisDep, settings: SettingsDep) -> PolicyStore:
    return PolicyStore(redis, settings.keys)


DedupDep = Annotated[DedupStore, Depends(get_dedup)]
SnapshotsDep = Annotated[SnapshotReader, Depends(get_snapshots)]
SubscriptionsDep = Annotated[SubscriptionStore, Depends(get_subscriptions)]
PolicyStoreDep = Annotated[PolicyStore, Depends(get_policy_store)]


def get_endpoint_health(redis: RedisDep, settings: SettingsDep) -> EndpointHealthStore:
    return EndpointHealthStore(redis, settings.keys)


EndpointHealthDep = Annotated[EndpointHealthStore, Depends(get_endpoint_health)]


# -- customer lists (issue 10): the lists reps work from, read from what the scorer wrote --


def get_list_reader(redis: RedisDep, settings: SettingsDep) -> ListReader:
    return ListReader(redis, settings.keys)


ListReaderDep = Annotated[ListReader, Depends(get_list_reader)]
