"""PUT /v1/customers/{customer_id}/profile: the owner's view of a customer, onto the profiles topic."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from ingest.deps import AuthenticatedRoute, IdentityDep, MetricsDep, PublisherDep, SettingsDep
from ingest.errors import ApiError, broker_unavailable
from ingest.identity import profile_identities
from ingest.schemas import CustomerId, ErrorOut, ProfileAccepted
from services.contract import ProfileEnvelope, ProfileIn, encode
from services.errors import BrokerUnavailable

router = APIRouter(tags=["customers"], route_class=AuthenticatedRoute)


@router.put(
    "/customers/{customer_id}/profile",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ProfileAccepted,
    summary="Replace a customer's profile",
    description="The whole profile replaces the previous one. 202 means the event log acknowledged it; "
    "the scorer applies it shortly after. `emails` and `phones` go to the adapters' identity map "
    "(hashed, in Redis) and not to the event log; absent, the stored ones stay; [] removes them.",
    responses={
        422: {"model": ErrorOut, "description": "A field is invalid (e.g. a phone number that is not one)."},
        503: {"model": ErrorOut, "description": "The event log did not acknowledge; retry."},
    },
)
async def put_profile(
    customer_id: CustomerId,
    profile: ProfileIn,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
    identity_map: IdentityDep,
) -> ProfileAccepted:
    if profile.emails is not None or profile.phones is not None:
        identities, problems = profile_identities(profile.emails, profile.phones, settings.identity_default_region)
        if problems:
            raise ApiError(422, "invalid_request", "; ".join(f"{field}: {reason}" for field, reason in problems))
        kinds = [kind for kind, given in (("email", profile.emails), ("phone", profile.phones)) if given is not None]
        await identity_map.replace(customer_id, identities, kinds)  # before the 202: events can map right after it
    bare = profile.model_copy(update={"emails": None, "phones": None})
    envelope = ProfileEnvelope(customer_id=customer_id, updated_at=datetime.now(UTC), profile=bare)
    try:
        await publisher.publish_many(settings.profiles_topic, [(customer_id.encode(), encode(envelope))])
    except BrokerUnavailable as exc:
        metrics.requests_refused.labels(reason="broker_unavailable").inc()
        raise broker_unavailable(exc) from exc
    metrics.profiles.inc()
    return ProfileAccepted(customer_id=customer_id)
