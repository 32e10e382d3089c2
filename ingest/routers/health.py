"""Unauthenticated operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ClusterDownError
from starlette.responses import Response

from ingest.deps import PartitionCheckDep, PublisherDep, RedisDep
from ingest.publisher import EventPublisher
from services.errors import BrokerUnavailable
from services.redisio import REDIS_ERRORS, RedisClient, ping

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0
"""How long each dependency check of /readyz may take."""


@router.get("/healthz", summary="Liveness: the process answers")
async def get_health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Kafka and Redis answer, FATIGUE_PARTITIONS is the recorded partition count",
    responses={503: {"description": "At least one check failed; `checks` says which."}},
)
async def get_readiness(publisher: PublisherDep, redis: RedisDep, partitions: PartitionCheckDep) -> JSONResponse:
    kafka, store, count = await asyncio.gather(_check_kafka(publisher), _check_redis(redis),
                                               partitions.check(READY_TIMEOUT_S))
    checks = {"kafka": kafka, "redis": store, "partitions": count}
    ready = all(result == "ok" for result in checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def get_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


async def _check_kafka(publisher: EventPublisher) -> str:
    try:
        await publisher.ping(READY_TIMEOUT_S)
    except BrokerUnavailable as exc:
        log.warning("readiness: the event log (Kafka) does not answer: %s", exc)
        return "error: the event log (Kafka) does not answer"
    return "ok"


async def _check_redis(redis: RedisClient) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await ping(redis)
    except TimeoutError:
        return f"error: the state store (Redis) did not answer within {READY_TIMEOUT_S:g}s"
    except ClusterDownError as exc:
        log.warning("readiness: %s", exc)
        return "error: the state store (Redis Cluster) does not serve every slot"
    except (*REDIS_ERRORS, OSError) as exc:
        log.warning("readiness: the state store (Redis) does not answer: %s", exc)
        return "error: the state store (Redis) does not answer"
    return "ok"
