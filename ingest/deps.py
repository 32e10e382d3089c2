"""Annotated dependencies: everything a route needs comes from the app built by create_app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from ingest.accept import AcceptPath
from ingest.adapters.rejected import RejectedStore
from ingest.auth import match_api_key
from ingest.dedup import DedupStore
from ingest.errors import ApiError
from ingest.identity import IdentityMap
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
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


# ---- intake (issue 12): the shared accept path, the identity map, the adapters' rejected store ----


def get_accept_path(publisher: PublisherDep, dedup: DedupDep, settings: SettingsDep) -> AcceptPath:
    return AcceptPath(publisher, dedup, topic=settings.events_topic, max_future_skew_s=settings.max_future_skew_s,
                      claim_wait_s=settings.kafka_request_timeout_s + 1)


AcceptDep = Annotated[AcceptPath, Depends(get_accept_path)]


def get_identity_map(redis: RedisDep, settings: SettingsDep) -> IdentityMap:
    return IdentityMap(redis, settings.keys, settings.identity_hash_key.get_secret_value().encode())


IdentityDep = Annotated[IdentityMap, Depends(get_identity_map)]


def get_rejected_store(redis: RedisDep, settings: SettingsDep) -> RejectedStore:
    return RejectedStore(redis, settings.keys, max_entries=settings.adapter_rejected_max,
                         ttl_s=settings.adapter_rejected_ttl_s)


RejectedDep = Annotated[RejectedStore, Depends(get_rejected_store)]
