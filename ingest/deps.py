"""Annotated dependencies: everything a route needs comes from the app built by create_app.

Every dependency is an `async def` (FastAPI runs a plain `def` one in its thread pool: a hop per
dependency per request, tests/ingest/test_no_thread_pool.py), and the stores of the hot paths
(snapshots, de-duplication, the accept path, the identity map, the rejected store) are built once in
the app's lifespan and handed out as they are: each dependency FastAPI solves costs tens of µs per
request (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ingest.accept import AcceptPath
from ingest.adapters.rejected import RejectedStore
from ingest.auth import RateLimiter, match_api_key, retry_after_header
from ingest.dedup import DedupStore
from ingest.errors import ApiError
from ingest.identity import IdentityMap
from ingest.partition_check import PartitionCountCheck
from ingest.policy_cache import PolicyCache
from ingest.publisher import EventPublisher
from services.apikeys import SCOPE_ADMIN, SCOPE_INGEST, SCOPE_READ, ApiKey, Rate
from services.customer_lists import ListReader
from services.delivery.health import EndpointHealthStore
from services.delivery.subscriptions import SubscriptionStore
from services.metrics import IngestMetrics
from services.policy.store import PolicyStore
from services.redisio import RedisClient
from services.settings import IngestSettings
from services.snapshots import CustomerReader

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False, description="One of the keys configured in FATIGUE_API_KEYS (the part after `name:`)."
)


async def get_settings(request: Request) -> IngestSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> IngestMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def get_publisher(request: Request) -> EventPublisher:
    return request.app.state.publisher  # type: ignore[no-any-return]


async def get_redis(request: Request) -> RedisClient:
    return request.app.state.redis  # type: ignore[no-any-return]


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
RedisDep = Annotated[RedisClient, Depends(get_redis)]


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    """The caller's key, after the checks every authenticated operation makes, in this order: 401 with
    `WWW-Authenticate: Bearer` when the key is absent or unknown, 429 with Retry-After when it is over
    its rate, 422 naming a query parameter the operation does not take."""
    metrics: IngestMetrics = request.app.state.metrics
    key = match_api_key(credentials.credentials if credentials else None, request.app.state.api_keys)
    if key is None:
        metrics.requests_refused.labels(reason="auth").inc()
        message = "API key not recognised" if credentials else "missing header Authorization: Bearer <api key>"
        log.info("401 %s %s from %s: %s", request.method, request.url.path,
                 request.client.host if request.client else "?", message)
        raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    if key.rate is not None and (wait_s := admit(request, key.name, key.rate)):
        metrics.requests_refused.labels(reason="rate_limited").inc()
        raise rate_limited(f"API key {key.name!r}", key.rate, wait_s)
    request.state.api_key_name = key.name  # the access log names the key, never shows it (ingest/telemetry.py)
    refuse_unknown_query(request)
    return key


def admit(request: Request, bucket: str, rate: Rate | None) -> float:
    """Admit a request against `bucket`'s rate (ingest/auth.py): 0, or the seconds to wait. An
    admitted request is remembered, so `charge_items` can charge what it turns out to carry."""
    if rate is None:
        return 0.0
    limiter: RateLimiter = request.app.state.rate_limiter
    wait_s = limiter.take(bucket, rate)
    if not wait_s:
        request.state.rate_bucket = (bucket, rate)
    return wait_s


def rate_limited(who: str, rate: Rate, wait_s: float) -> ApiError:
    return ApiError(429, "rate_limited", f"{who} is over its rate of {rate}; retry after Retry-After seconds",
                    headers={"Retry-After": retry_after_header(wait_s)})


def charge_items(request: Request, count: int) -> None:
    """Charge the caller's rate for the `count` events or records its admitted request carries (the
    admission took one): every route that accepts events calls it once it knows the count."""
    charged: tuple[str, Rate] | None = getattr(request.state, "rate_bucket", None)
    if charged is not None and count > 1:
        limiter: RateLimiter = request.app.state.rate_limiter
        limiter.charge(charged[0], charged[1], count - 1)


async def _caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    """`authenticate` once per request: its key is kept on the request (a second call neither
    authenticates again nor takes a second token of the key's rate)."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        key = request.state.api_key = authenticate(request, credentials)
    return key


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """The caller's API key (`authenticate`): every /v1 router depends on it.

    The scope checks below read the key it kept instead of depending on it: FastAPI solves a
    dependency's own dependencies again wherever it is used, even when its value is cached, and each
    one solved costs tens of µs per request (docs/performance.md)."""
    return await _caller(request, credentials)


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


class AuthenticatedRoute(APIRoute):
    """A route whose caller is authenticated (`authenticate`: 401, 429, unknown query parameters)
    before anything of its body is read or parsed. FastAPI reads and parses a declared body before
    it solves any dependency, so without this an unauthenticated request with a broken body would be
    answered 400 instead of 401, after its body was read. Every router behind the API key is built
    with `route_class=AuthenticatedRoute` (`require_authenticated_routes`: create_app refuses one that is not)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def authenticated_first(request: Request) -> Response:
            await _caller(request, await bearer(request))
            return await handle(request)

        return authenticated_first


def require_authenticated_routes(router: APIRouter) -> APIRouter:
    """`router`, whose routes are all AuthenticatedRoutes; TypeError naming the first that is not."""
    for route in router.routes:
        if isinstance(route, APIRoute) and not isinstance(route, AuthenticatedRoute):
            raise TypeError(f"route {route.path} must authenticate before reading its body: build its router "
                            "with route_class=AuthenticatedRoute")
    return router


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the caller's key, which must hold `scope`; 403 naming the scope otherwise.
    Use the module's one instance per scope (NEEDS_* / *Key below), so FastAPI calls it once per request.
    It authenticates itself when no `require_api_key` ran before it (it never lets a caller through
    unauthenticated)."""

    async def check(request: Request) -> ApiKey:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is None:
            key = await _caller(request, await bearer(request))
        if not key.may(scope):
            request.app.state.metrics.requests_refused.labels(reason="forbidden").inc()
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
    """A query parameter the operation does not know, or one given twice (every parameter of this API
    takes one value), is a 422 naming it: a typo must not be ignored, nor all values but the last.
    Checked by `require_api_key` for every authenticated operation."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        known = ", ".join(sorted(_query_names(route))) or "none"
        raise ApiError(422, "invalid_request",
                       f"unknown query parameter {unknown[0]!r} (this operation takes: {known})")
    names = [name for name, _ in request.query_params.multi_items()]
    if len(names) != len(set(names)):
        twice = next(name for name in names if names.count(name) > 1)
        raise ApiError(422, "invalid_request", f"query parameter {twice!r} is given more than once; give it once")


_SCOPE_CHECKS = {scope: require_scope(scope) for scope in (SCOPE_INGEST, SCOPE_READ, SCOPE_ADMIN)}
IngestKey = Annotated[ApiKey, Depends(_SCOPE_CHECKS[SCOPE_INGEST])]
ReadKey = Annotated[ApiKey, Depends(_SCOPE_CHECKS[SCOPE_READ])]
AdminKey = Annotated[ApiKey, Depends(_SCOPE_CHECKS[SCOPE_ADMIN])]
NEEDS_ADMIN = Depends(_SCOPE_CHECKS[SCOPE_ADMIN])
NEEDS_READ = Depends(_SCOPE_CHECKS[SCOPE_READ])
NEEDS_INGEST = Depends(_SCOPE_CHECKS[SCOPE_INGEST])


async def get_dedup(request: Request) -> DedupStore:
    return request.app.state.dedup  # type: ignore[no-any-return]


async def get_customers(request: Request) -> CustomerReader:
    return request.app.state.customers  # type: ignore[no-any-return]


async def get_subscriptions(redis: RedisDep, settings: SettingsDep) -> SubscriptionStore:
    return SubscriptionStore(redis, settings.keys)


async def get_policy_cache(request: Request) -> PolicyCache:
    return request.app.state.policy_cache  # type: ignore[no-any-return]


PolicyCacheDep = Annotated[PolicyCache, Depends(get_policy_cache)]


async def get_policy_store(redis: RedisDep, settings: SettingsDep) -> PolicyStore:
    return PolicyStore(redis, settings.keys)


DedupDep = Annotated[DedupStore, Depends(get_dedup)]
CustomersDep = Annotated[CustomerReader, Depends(get_customers)]
SubscriptionsDep = Annotated[SubscriptionStore, Depends(get_subscriptions)]
PolicyStoreDep = Annotated[PolicyStore, Depends(get_policy_store)]


async def get_endpoint_health(redis: RedisDep, settings: SettingsDep) -> EndpointHealthStore:
    return EndpointHealthStore(redis, settings.keys)


EndpointHealthDep = Annotated[EndpointHealthStore, Depends(get_endpoint_health)]


# ---- intake (issue 12): the shared accept path, the identity map, the adapters' rejected store ----


async def get_accept_path(request: Request) -> AcceptPath:
    return request.app.state.accept  # type: ignore[no-any-return]


AcceptDep = Annotated[AcceptPath, Depends(get_accept_path)]


async def get_identity_map(request: Request) -> IdentityMap:
    return request.app.state.identity  # type: ignore[no-any-return]


IdentityDep = Annotated[IdentityMap, Depends(get_identity_map)]


async def get_rejected_store(request: Request) -> RejectedStore:
    return request.app.state.rejected  # type: ignore[no-any-return]


RejectedDep = Annotated[RejectedStore, Depends(get_rejected_store)]


# -- customer lists (issue 10): the lists reps work from, read from what the scorer wrote --


async def get_list_reader(request: Request) -> ListReader:
    return request.app.state.lists  # type: ignore[no-any-return]


ListReaderDep = Annotated[ListReader, Depends(get_list_reader)]


async def get_partition_check(request: Request) -> PartitionCountCheck:
    return request.app.state.partition_check  # type: ignore[no-any-return]


PartitionCheckDep = Annotated[PartitionCountCheck, Depends(get_partition_check)]
