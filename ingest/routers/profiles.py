"""PUT /v1/customers/{customer_id}/profile: the owner's view of a customer, onto the profiles topic."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from ingest.deps import MetricsDep, PublisherDep, SettingsDep
from ingest.errors import broker_unavailable
from ingest.schemas import CustomerId, ErrorOut, ProfileAccepted
from services.contract import ProfileEnvelope, ProfileIn, encode
from services.errors import BrokerUnavailable

router = APIRouter(tags=["customers"])


@router.put(
    "/customers/{customer_id}/profile",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ProfileAccepted,
    summary="Replace a customer's profile",
    description="The whole profile replaces the previous one. 202 means the event log acknowledged it; "
    "the scorer applies it shortly after.",
    responses={503: {"model": ErrorOut, "description": "The event log did not acknowledge; retry."}},
)
async def put_profile(
    customer_id: CustomerId,
    profile: ProfileIn,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
) -> ProfileAccepted:
    envelope = ProfileEnvelope(customer_id=customer_id, updated_at=datetime.now(UTC), profile=profile)
    try:
        await publisher.publish_many(settings.profiles_topic, [(customer_id.encode(), encode(envelope))])
    except BrokerUnavailable as exc:
        metrics.requests_refused.labels(reason="broker_unavailable").inc()
        raise broker_unavailable(exc) from exc
    metrics.profiles.inc()
    return ProfileAccepted(customer_id=customer_id)
