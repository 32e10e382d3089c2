"""Webhook deliveries the notifier scheduled: list by status (and subscription), read one, retry a dead letter.

Replaying all of a subscription's dead letters is POST /v1/subscriptions/{id}/replay (routers/subscriptions.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from ingest.deps import AuthenticatedRoute, RedisDep, SettingsDep
from ingest.errors import ApiError
from ingest.schemas import DeliveryOut, DeliveryStatus, ErrorOut
from services.contract import from_ms
from services.delivery.store import BY_SUBSCRIPTION, DeliveryRecord, DeliveryStore

router = APIRouter(prefix="/deliveries", tags=["deliveries"], route_class=AuthenticatedRoute)

MAX_OFFSET = 1_000_000
"""Beyond any number of deliveries kept; a larger offset is a bad parameter (422), not an outage."""

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such delivery."}}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "Unknown status, or subscription_id with a status other than failed."}
}


async def get_deliveries(redis: RedisDep, settings: SettingsDep) -> DeliveryStore:
    return DeliveryStore(redis, settings.keys)


DeliveriesDep = Annotated[DeliveryStore, Depends(get_deliveries)]


def _out(rec: DeliveryRecord) -> DeliveryOut:
    return DeliveryOut(
        id=rec.id, status=rec.status, subscription_id=rec.subscription_id,
        action_id=rec.action["action_id"], action_type=rec.action["type"],
        customer_id=rec.action.get("customer_id"), attempts=rec.attempts,
        next_attempt_at=from_ms(rec.next_attempt_at_ms) if rec.status == "pending" else None,
        last_status=rec.last_status, last_error=rec.last_error, digest_id=rec.digest_id,
        created_at=from_ms(rec.created_at_ms), updated_at=from_ms(rec.updated_at_ms),  # type: ignore[arg-type]
    )


def _not_found(delivery_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no delivery {delivery_id!r}")


@router.get(
    "",
    response_model=list[DeliveryOut],
    summary="List deliveries by status (failed: the dead letters), optionally of one subscription",
    responses=_INVALID,
)
async def list_deliveries(
    store: DeliveriesDep,
    status_: Annotated[DeliveryStatus, Query(alias="status")] = "failed",
    subscription_id: Annotated[
        str | None, Query(min_length=1, description="Only this subscription's (with status=failed only).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[DeliveryOut]:
    """Pending: next attempt first; failed, delivered and digested: most recent first."""
    if subscription_id is not None and status_ not in BY_SUBSCRIPTION:
        raise ApiError(422, "invalid_request", f"subscription_id can only be combined with status="
                       f"{' or '.join(BY_SUBSCRIPTION)}, not {status_}")
    records = await store.list(status_, limit=limit, offset=offset, subscription_id=subscription_id)
    return [_out(rec) for rec in records]


@router.get("/{delivery_id}", response_model=DeliveryOut, summary="Read one delivery", responses=_NOT_FOUND)
async def get_delivery(delivery_id: str, store: DeliveriesDep) -> DeliveryOut:
    rec = await store.get(delivery_id)
    if rec is None:
        raise _not_found(delivery_id)
    return _out(rec)


@router.post(
    "/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    summary="Send a dead-lettered delivery again",
    responses={**_NOT_FOUND, 409: {"model": ErrorOut, "description": "The delivery is not failed."}},
)
async def retry_delivery(delivery_id: str, store: DeliveriesDep) -> DeliveryOut:
    """Back to pending, due now, with a fresh retry schedule; the notifier sends it shortly."""
    try:
        rec = await store.retry(delivery_id)
    except ValueError as exc:
        raise ApiError(409, "conflict", f"delivery {delivery_id!r} is {exc}, only failed ones can be retried") from exc
    if rec is None:
        raise _not_found(delivery_id)
    return _out(rec)
