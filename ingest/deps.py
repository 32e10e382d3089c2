"""Annotated dependencies: everything a route needs comes from the app built by create_app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from ingest.accept import AcceptPath
from ingest.adapters.rejected import RejectedStore
from ingest.auth import RateLimiter, match_api_key, retry_after_header
from ingest.dedup import DedupStore
from ingest.errors import ApiError
from ingest.identity import IdentityMap
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
from services.apikeys import SCOPE_ADMIN, SCOPE_INGEST, SCOPE_READ, ApiKey
from services.customer_lists import ListReader
from services.delivery.health import EndpointHealthStore
from services.delivery.subscriptions import SubscriptionStore
from services.metrics import IngestMetrics
from services.policy.store import PolicyStore
from services.settings import IngestSettings
from services.snapshots import SnapshotReader

log = logging.getLogger(__name__)

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
    """The caller's API key; 401 with `WWW-Authenticate: Bearer` when absent or unknown, 429 with
    Retry-After when the key is over its rate."""
    key = match_api_key(credentials.credentials if credentials else None, request.app.state.api_keys)
    if key is None:
        metrics.requests_refused.labels(reason="auth").inc()
        message = "API key not recognised" if credentials else "missing header Authorization: Bearer <api key>"
        log.info("401 %s %s from %s: %s", request.method, request.url.path,
                 request.client.host if request.client else "?", message)
        raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    if key.rate is not None:
        limiter: RateLimiter = request.app.state.rate_limiter
        wait_s = limiter.take(key.name, key.rate)
        if wait_s:
            metrics.requests_refused.labels(reason="rate_limited").inc()
            raise ApiError(429, "rate_limited", f"API key {key.name!r} is over its rate of {key.rate}; retry after "
                           "Retry-After seconds", headers={"Retry-After": retry_after_header(wait_s)})
    request.state.api_key_name = key.name  # the access log names the key, never shows it (ingest/telemetry.py)
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


def require_scope(scope: str) -> Callable[..., ApiKey]:
    """A dependency: the caller's key, which must hold `scope`; 403 naming the scope otherwise."""

    def check(request: Request, key: ApiKeyDep, metrics: MetricsDep) -> ApiKey:
        if not key.may(scope):
            metrics.requests_refused.labels(reason="forbidden").inc()
            raise ApiError(
                403, "forbidden",
                f"API key {key.name!r} lacks the {scope!r} scope, which {request.method} {request.url.path} needs "
                f"(its scopes: {', '.join(sorted(key.scopes))}); grant it in FATIGUE_API_KEYS as name:secret:{scope}",
                extra={"required_scope": scope},
            )
        return key

    check.__name__ = f"require_{scope}_scope"
    return check


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included (computed once per route)."""
    known = _QUERY_NAMES.get(id(route))
    if known is not None:
        return known
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    _QUERY_NAMES[id(route)] = frozenset(names)
    return _QUERY_NAMES[id(route)]


def refuse_unknown_query(request: Request) -> None:
    """A query parameter the operation does not know is a 422 naming it (a typo must not be ignored)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        known = ", ".join(sorted(_query_names(route))) or "none"
        raise ApiError(422, "invalid_request",
                       f"unknown query parameter {unknown[0]!r} (this operation takes: {known})")


IngestKey = Annotated[ApiKey, Depends(require_scope(SCOPE_INGEST))]
ReadKey = Annotated[ApiKey, Depends(require_scope(SCOPE_READ))]
AdminKey = Annotated[ApiKey, Depends(require_scope(SCOPE_ADMIN))]
NEEDS_ADMIN = Depends(require_scope(SCOPE_ADMIN))
NEEDS_READ = Depends(require_scope(SCOPE_READ))
NEEDS_INGEST = Depends(require_scope(SCOPE_INGEST))


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


# -- customer lists (issue 10): the lists reps work from, read from what the scorer wrote --


def get_list_reader(redis: RedisDep, settings: SettingsDep) -> ListReader:
    return ListReader(redis, settings.keys)


ListReaderDep = Annotated[ListReader, Depends(get_list_reader)]
