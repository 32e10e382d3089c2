"""POST /v1/events: validate each item, drop duplicates, publish, acknowledge only what Kafka stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from ingest.accept import EventsInFlight
from ingest.deps import AcceptDep, ApiKeyDep, MetricsDep, SettingsDep
from ingest.errors import ApiError, broker_unavailable, service_unavailable
from ingest.schemas import ErrorDetail, ErrorOut, EventsAccepted, EventsRejected, RejectedItem
from ingest.validation import BodyRefused, parse_json, split_batch
from services.errors import BrokerUnavailable
from services.metrics import IngestMetrics

router = APIRouter(tags=["events"])

EVENTS_BODY_SCHEMA = {
    "anyOf": [
        {"$ref": "#/components/schemas/EventIn"},
        {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}, "minItems": 1},
    ]
}


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventsAccepted,
    summary="Record touches and responses",
    description="One event object or an array of them. Each item is validated on its own: valid items "
    "are stored even when others are rejected. 202 means every accepted event was acknowledged "
    "by the event log; duplicates (event_id already accepted for this API key) are not stored again.",
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON."},
        413: {"model": ErrorOut, "description": "Body too large or too many events."},
        422: {"model": EventsRejected, "description": "No item was valid (or the body is not an object/array)."},
        503: {"model": ErrorOut, "description": "The event log did not acknowledge; retry after Retry-After."},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": EVENTS_BODY_SCHEMA}}}},
)
async def post_events(
    request: Request,
    api_key: ApiKeyDep,
    settings: SettingsDep,
    intake: AcceptDep,
    metrics: MetricsDep,
) -> Any:
    started = time.perf_counter()
    items = _items(await request.body(), settings.max_events_per_request, metrics)
    now = datetime.now(UTC)
    batch = intake.check(items, now=now)
    rejected = [RejectedItem(index=r.index, error=r.error) for r in batch.rejected]
    metrics.events.labels(outcome="rejected").inc(len(rejected))
    if not batch.valid:
        return _all_rejected(rejected)
    try:
        stored = await intake.accept([event for _, event in batch.valid], producer=api_key.name, received_at=now)
    except EventsInFlight as exc:
        raise _in_flight(exc.count) from exc
    except BrokerUnavailable as exc:
        metrics.requests_refused.labels(reason="broker_unavailable").inc()
        raise broker_unavailable(exc) from exc
    if stored.events:
        metrics.publish_latency.observe(time.perf_counter() - started)
    metrics.events.labels(outcome="accepted").inc(stored.count)
    metrics.events.labels(outcome="duplicate").inc(stored.duplicates)
    return EventsAccepted(accepted=stored.count, duplicates=stored.duplicates, rejected=rejected)


def _in_flight(count: int) -> ApiError:
    return service_unavailable(
        "events_in_flight",
        f"{count} of these event ids are being stored by another request right now; nothing was stored, "
        "retry after Retry-After (they will then count as accepted or as duplicates)",
    )


def _items(raw: bytes, max_items: int, metrics: IngestMetrics) -> list[Any]:
    try:
        return split_batch(parse_json(raw), max_items)
    except BodyRefused as exc:
        metrics.requests_refused.labels(reason="size" if exc.status == 413 else "body").inc()
        raise ApiError(exc.status, exc.code, exc.message) from exc


def _all_rejected(rejected: list[RejectedItem]) -> JSONResponse:
    message = f"all {len(rejected)} events were rejected; see `rejected`"
    body = EventsRejected(
        error=ErrorDetail(code="all_events_rejected", message=message),
        accepted=0,
        duplicates=0,
        rejected=rejected,
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
