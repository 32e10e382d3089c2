"""POST /v1/events: validate each item, drop duplicates, publish, acknowledge only what Kafka stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from ingest import cloudevents
from ingest.accept import EventsInFlight
from ingest.deps import AcceptDep, AuthenticatedRoute, IngestKey, MetricsDep, SettingsDep, charge_items
from ingest.errors import REFUSED_STAGE, ApiError, broker_unavailable, refusal_text, service_unavailable
from ingest.schemas import ErrorCode, ErrorDetail, ErrorOut, EventsAccepted, EventsRejected, RejectedItem
from ingest.validation import BodyRefused, parse_json, split_batch
from services.contract import EventIn
from services.errors import BrokerUnavailable, RecordRefused
from services.metrics import IngestMetrics

router = APIRouter(tags=["events"], route_class=AuthenticatedRoute)

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
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": EVENTS_BODY_SCHEMA},
        cloudevents.STRUCTURED: {"schema": {"type": "object", "description": "One CloudEvent 1.0 whose `data` is an "
                                            "EventIn (`id` and `time` fill a missing event_id / occurred_at)."}},
        cloudevents.BATCH: {"schema": {"type": "array", "items": {"type": "object"}, "minItems": 1}},
    }}},
)
async def post_events(
    request: Request,
    api_key: IngestKey,
    settings: SettingsDep,
    intake: AcceptDep,
    metrics: MetricsDep,
) -> Any:
    started = time.perf_counter()
    items = _items(await request.body(), settings.max_events_per_request, metrics)
    charge_items(request, len(items))  # the key's rate counts events, not requests (docs/api.md#rate-limits)
    now = datetime.now(UTC)
    unwrapped = _unwrapped(items, request.headers.get("content-type"))
    checked = [item for item in unwrapped if not isinstance(item, _NotAnEvent)]
    batch = intake.check(checked, now=now)
    positions = [i for i, item in enumerate(unwrapped) if not isinstance(item, _NotAnEvent)]
    rejected = sorted([RejectedItem(index=positions[r.index], error=r.error) for r in batch.rejected] + [
        RejectedItem(index=i, error=item.reason) for i, item in enumerate(unwrapped) if isinstance(item, _NotAnEvent)
    ], key=lambda r: r.index)
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
    rejected = sorted(rejected + _refused(stored.refused, batch.valid, positions, metrics), key=lambda r: r.index)
    if stored.refused and not stored.count and not stored.duplicates:
        return _all_rejected(rejected)
    return EventsAccepted(accepted=stored.count, duplicates=stored.duplicates, rejected=rejected)


def _refused(refused: list[tuple[EventIn, RecordRefused]], valid: list[tuple[int, EventIn]], positions: list[int],
             metrics: IngestMetrics) -> list[RejectedItem]:
    """Events the event log refused for their own properties (too large): rejected items, never retried."""
    index_of: dict[str, int] = {}
    for i, event in valid:
        index_of.setdefault(event.event_id, positions[i])
    items = []
    for event, error in refused:
        metrics.refused_records.labels(stage=REFUSED_STAGE, reason=error.reason).inc()
        metrics.events.labels(outcome="rejected").inc()
        items.append(RejectedItem(index=index_of[event.event_id], error=refusal_text(error)))
    return items


class _NotAnEvent:
    """A CloudEvent with nothing to validate inside (its index is rejected with `reason`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _unwrapped(items: list[Any], content_type: str | None) -> list[Any]:
    """The items as they are, or the contract events inside CloudEvents (ingest/cloudevents.py)."""
    if not cloudevents.is_cloudevents(content_type):
        return items
    if cloudevents.media_type(content_type) == cloudevents.STRUCTURED and len(items) != 1:
        raise ApiError(422, "invalid_body", "application/cloudevents+json carries one CloudEvent object; "
                       "send an array as application/cloudevents-batch+json")
    out: list[Any] = []
    for item in items:
        event = cloudevents.unwrap(item)
        out.append(_NotAnEvent(event) if isinstance(event, str) else event)
    return out


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
        error=ErrorDetail(code=ErrorCode.ALL_EVENTS_REJECTED, message=message),
        accepted=0,
        duplicates=0,
        rejected=rejected,
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
