"""GET /v1/customers/{customer_id}: the scorer's latest snapshot of one customer."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import ValidationError

from ingest.deps import SnapshotsDep
from ingest.errors import ApiError
from ingest.schemas import CustomerId, CustomerStateOut, ErrorOut
from ingest.validation import describe_errors

log = logging.getLogger(__name__)

router = APIRouter(tags=["customers"])


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerStateOut,
    summary="Current fatigue state of a customer",
    responses={
        404: {"model": ErrorOut, "description": "The scorer has no state for this customer yet."},
        503: {"model": ErrorOut, "description": "The state store (Redis) did not answer."},
    },
)
async def get_customer(customer_id: CustomerId, snapshots: SnapshotsDep) -> CustomerStateOut:
    snapshot = await snapshots.get(customer_id)
    if snapshot is None:
        raise ApiError(
            404,
            "not_found",
            f"no state for customer {customer_id!r} yet: the scorer has not processed any event or profile for it",
        )
    try:
        return CustomerStateOut.model_validate(snapshot)
    except ValidationError as exc:
        log.error("snapshot of %s does not match the API schema: %s", customer_id, exc)
        raise ApiError(
            500, "bad_snapshot", f"the stored state of {customer_id!r} is unreadable: {describe_errors(exc.errors())}"
        ) from exc
