"""POST /v1/events: validate each item, drop duplicates, publish, acknowledge only what Kafka stored."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from ingest.deps import ApiKeyDep, DedupDep, MetricsDep, PublisherDep, SettingsDep
from ingest.errors import ApiError, broker_unavailable, service_unavailable
from ingest.publisher import EventPublisher, Record
from ingest.schemas import ErrorCode, ErrorDetail, ErrorOut, EventsAccepted, EventsRejected, RejectedItem
from ingest.validation import BodyRefused, check_events, first_occurrences, parse_json, split_batch
from services.contract import EventEnvelope, EventIn, encode
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
    publisher: PublisherDep,
    dedup: DedupDep,
    metrics: MetricsDep,
) -> Any:
    started = time.perf_counter()
    items = _items(await request.body(), settings.max_events_per_request, metrics)
    now = datetime.now(UTC)
    batch = check_events(items, now=now, max_future_skew_s=settings.max_future_skew_s)
    rejected = [RejectedItem(index=r.index, error=r.error) for r in batch.rejected]
    metrics.events.labels(outcome="rejected").inc(len(rejected))
    if not batch.valid:
        return _all_rejected(rejected)
    unique, repeats = first_occurrences([event for _, event in batch.valid])
    claim = await dedup.claim(api_key.name, [event.event_id for event in unique],
                              wait_s=settings.kafka_request_timeout_s + 1)
    if claim.in_flight:
        await dedup.release(api_key.name, claim.claimed)
        raise _in_flight(len(claim.in_flight))
    claimed = set(claim.claimed)
    fresh = [event for event in unique if event.event_id in claimed]
    try:
        await _publish(publisher, settings.events_topic, _records(fresh, api_key.name, now), metrics, started)
    except BaseException:
        await asyncio.shield(dedup.release(api_key.name, claim.claimed))
        raise
    await dedup.confirm(api_key.name, claim.claimed)
    duplicates = repeats + len(claim.duplicates)
    metrics.events.labels(outcome="accepted").inc(len(fresh))
    metrics.events.labels(outcome="duplicate").inc(duplicates)
    return EventsAccepted(accepted=len(fresh), duplicates=duplicates, rejected=rejected)


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


def _records(events: list[EventIn], producer: str, received_at: datetime) -> list[Record]:
    return [
        (event.customer_id.encode(), encode(EventEnvelope(producer=producer, received_at=received_at, event=event)))
        for event in events
    ]


async def _publish(
    publisher: EventPublisher, topic: str, records: list[Record], metrics: IngestMetrics, started: float
) -> None:
    if not records:
        return
    try:
        await publisher.publish_many(topic, records)
    except BrokerUnavailable as exc:
        metrics.requests_refused.labels(reason="broker_unavailable").inc()
        raise broker_unavailable(exc) from exc
    metrics.publish_latency.observe(time.perf_counter() - started)


def _all_rejected(rejected: list[RejectedItem]) -> JSONResponse:
    message = f"all {len(rejected)} events were rejected; see `rejected`"
    body = EventsRejected(
        error=ErrorDetail(code=ErrorCode.ALL_EVENTS_REJECTED, message=message),
        accepted=0,
        duplicates=0,
        rejected=rejected,
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
