"""GET /v1/customers/{customer_id} (the scorer's latest snapshot), its pre-send decision, and
GET /v1/customers?list=… (the lists reps work from)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import ValidationError

from ingest.adapters.rejected import names_customer
from ingest.customer_views import explain
from ingest.deps import (
    NEEDS_ADMIN,
    NEEDS_READ,
    AdminKey,
    AuthenticatedRoute,
    CustomersDep,
    IdentityDep,
    ListReaderDep,
    MetricsDep,
    PolicyCacheDep,
    PublisherDep,
    RedisDep,
    RejectedDep,
    SettingsDep,
    SubscriptionsDep,
)
from ingest.errors import ApiError, broker_unavailable
from ingest.schemas import (
    CustomerErased,
    CustomerId,
    CustomerListItemOut,
    CustomerListOut,
    CustomerStateOut,
    DecisionOut,
    ErrorOut,
    ListName,
)
from ingest.validation import describe_errors
from services.contract import Channel, FreeId, Stage, Tier, TouchKind
from services.customer_lists import InvalidCursor, list_item
from services.erasure import erase_customer
from services.errors import BrokerUnavailable
from services.policy.decision import decide, deciding_rule

log = logging.getLogger(__name__)

router = APIRouter(tags=["customers"], route_class=AuthenticatedRoute)


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerStateOut,
    dependencies=[NEEDS_READ],
    summary="Current fatigue state of a customer",
    responses={
        404: {"model": ErrorOut, "description": "The scorer has no state for this customer yet."},
        503: {"model": ErrorOut, "description": "The state store (Redis) did not answer."},
    },
)
async def get_customer(customer_id: CustomerId, customers: CustomersDep, policies: PolicyCacheDep) -> CustomerStateOut:
    stored = await customers.state(customer_id)
    if stored is None:
        raise ApiError(
            404,
            "not_found",
            f"no state for customer {customer_id!r} yet: the scorer has not processed any event or profile for it",
        )
    _, policy = await policies.current()
    snapshot = explain(stored, customer_id, policy, int(datetime.now(UTC).timestamp() * 1000))
    try:
        return CustomerStateOut.model_validate(snapshot)
    except ValidationError as exc:
        log.error("snapshot of %s does not match the API schema: %s", customer_id, exc)
        raise ApiError(
            500, "bad_snapshot", f"the stored state of {customer_id!r} is unreadable: {describe_errors(exc.errors())}"
        ) from exc


ERASED_KINDS = ("state", "snapshot", "lists", "rejected", "identities", "profile")
"""The keys of `erased` in the answer of DELETE /v1/customers/{id}, in the order they are erased."""


@router.delete(
    "/customers/{customer_id}",
    response_model=CustomerErased,
    dependencies=[NEEDS_ADMIN],
    summary="Erase a customer (right to erasure)",
    description="Writes a tombstone for the customer's profile on the compacted profiles topic (the scorer "
    "erases again when it reads it), then deletes from Redis the customer's state, snapshot, places on the "
    "lists reps work from, the adapters' rejected entries of its addresses or id, and its identities (email "
    "addresses and phone numbers the adapters map to it). Idempotent. `remains` lists what is not erased here "
    "(the Kafka log until its retention, delivery records until they expire, …); see docs/api.md.",
    responses={503: {"model": ErrorOut, "description": "Kafka or Redis did not answer; nothing or only part was "
                     "erased: retry (erasing is idempotent)."}},
)
async def delete_customer(
    customer_id: CustomerId, redis: RedisDep, settings: SettingsDep, publisher: PublisherDep, key: AdminKey,
    identities: IdentityDep, rejected: RejectedDep, subscriptions: SubscriptionsDep,
) -> CustomerErased:
    try:
        await publisher.publish_many(settings.profiles_topic, [(customer_id.encode(), None)])
    except BrokerUnavailable as exc:
        raise broker_unavailable(exc) from exc
    members = await identities.members_of(customer_id)  # read before they are erased, last
    erased = await erase_customer(redis, settings.keys, settings.partitions, customer_id)
    erased["rejected"] = await rejected.erase_matching(
        lambda fields: names_customer(fields, customer_id, members, identities.member)) > 0
    erased["identities"] = await identities.erase(customer_id)
    erased["profile"] = True
    log.info("customer %s erased by %s (%s)", customer_id, key.name,
             ", ".join(name for name, existed in erased.items() if existed))
    naming = sorted(sub.id for sub in await subscriptions.list() if customer_id in sub.filters.customer_ids)
    return CustomerErased(customer_id=customer_id, erased=erased, remains=erasure_remains(naming))


ERASURE_REMAINS = [
    "events of this customer on the events topic (and on the intake topic, if an upstream producer published "
    "them there), until the topics' retention deletes them",
    "actions about this customer on the actions topic, until its retention",
    "earlier versions of its profile on the compacted profiles topic, until compaction removes them",
    "records about this customer on the dead-letter topic, until its retention",
    "webhook delivery records (they hold the action, also when folded into a rep's digest), until they expire "
    "(FATIGUE_DELIVERED_TTL_S / FATIGUE_DEAD_LETTER_TTL_S)",
    "event-id de-duplication marks (the event ids your producers chose, nothing else), until they expire "
    "(FATIGUE_DEDUP_TTL_S)",
    "provider events in the adapters' rejected store about addresses this customer's profile does not list "
    "(nothing links them to it), until they expire (FATIGUE_ADAPTER_REJECTED_TTL_S)",
    "copies your webhook receivers and chat tools keep",
]


def erasure_remains(subscriptions_naming: list[str]) -> list[str]:
    """What stays after an erasure; the subscriptions whose filters name the customer, if any."""
    if not subscriptions_naming:
        return list(ERASURE_REMAINS)
    return [*ERASURE_REMAINS, f"the filters of subscriptions {', '.join(subscriptions_naming)} name this customer "
            "id (your configuration: change it with PATCH /v1/subscriptions/{id})"]


@router.get(
    "/customers/{customer_id}/decision",
    response_model=DecisionOut,
    dependencies=[NEEDS_READ],
    summary="Pre-send decision: allow, defer or deny a touch now",
    description="Applies the policy in force to the customer's latest snapshot: do-not-contact, "
    "unsubscribed channels and the same campaign within sending.same_campaign_gap deny; a throttle or "
    "cool-off, the monthly or weekly cap, the channel's minimum gap, a quiet period or quiet hours in the "
    "customer's local time defer; `next_allowed_at` says when whenever the end is known. Served from "
    "Redis, no Kafka.",
    responses={503: {"model": ErrorOut, "description": "The state store (Redis) did not answer."}},
)
async def get_decision(
    customer_id: CustomerId,
    customers: CustomersDep,
    policies: PolicyCacheDep,
    metrics: MetricsDep,
    channel: Annotated[Channel, Query(description="The channel of the planned touch.")],
    kind: Annotated[TouchKind | None, Query(description="The kind of the planned touch.")] = None,
    campaign_id: Annotated[FreeId | None, Query(
        description="The campaign the touch is for: a touch of the same campaign within "
        "sending.same_campaign_gap is denied, naming the earlier touch's rep and time.")] = None,
) -> DecisionOut:
    snapshot, stamp = await customers.view_with_policy_stamp(customer_id)  # one Redis round trip
    version, policy = await policies.in_force_at(stamp)
    now = datetime.now(UTC)
    kind_value = None if kind is None else kind.value
    result = decide(snapshot, policy, channel.value, kind_value, int(now.timestamp() * 1000), campaign_id)
    metrics.decisions.labels(result.decision, deciding_rule(result)).inc()
    return DecisionOut(
        customer_id=customer_id,
        channel=channel.value,
        kind=kind_value,
        decision=result.decision,
        next_allowed_at=None if result.next_allowed_ms is None else datetime.fromtimestamp(
            result.next_allowed_ms / 1000, UTC),
        reasons=result.reasons,
        counts=result.counts,
        evaluated_at=now,
        snapshot_as_of=None if snapshot is None else snapshot.get("as_of"),
        policy_version=version,
    )


# -- customer lists (issue 10) --


@router.get(
    "/customers",
    response_model=CustomerListOut,
    dependencies=[NEEDS_READ],
    summary="Customers on a list reps work from: cooling_off, to_activate, throttled",
    description="Most urgent first (to_activate: longest overdue; cooling_off and throttled: most recent), "
    "cursor-paginated, optionally one owner rep's, tier's or stage's. Each item says why, since when, the "
    "suggested next step and when it is allowed. Maintained by the scorer in the same Redis transaction as "
    "the customers' states.",
    responses={
        422: {"model": ErrorOut, "description": "Unknown list, bad filter, or a cursor of another list."},
        503: {"model": ErrorOut, "description": "The state store (Redis) did not answer."},
    },
)
async def list_customers(
    lists: ListReaderDep,
    customers: CustomersDep,
    policies: PolicyCacheDep,
    list_name: Annotated[ListName, Query(alias="list", description="cooling_off | to_activate | throttled")],
    owner_rep_id: Annotated[FreeId | None, Query(description="Only this rep's customers.")] = None,
    tier: Annotated[Tier | None, Query(description="Only customers of this tier.")] = None,
    stage: Annotated[Stage | None, Query(description="Only customers in this stage.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many items (default 50).")] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the page before.")] = None,
) -> CustomerListOut:
    version, policy = await policies.current()
    try:
        page = await lists.page(list_name, owner_rep_id=owner_rep_id, tier=None if tier is None else tier.value,
                                stage=None if stage is None else stage.value, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_request", f"cursor (in query): {exc}") from exc
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    states = await customers.states([(customer_id, partition) for customer_id, _, partition in page.members])
    items = []
    for customer_id, _, _ in page.members:
        if customer_id not in states:
            continue  # erased between the index read and the state read
        item = list_item(customer_id, explain(states[customer_id], customer_id, policy, now_ms), policy, now_ms)
        allowed = item.pop("next_allowed_ms")
        items.append(CustomerListItemOut.model_validate(
            {**item, "next_allowed_at": None if allowed is None else datetime.fromtimestamp(allowed / 1000, UTC)}))
    return CustomerListOut.model_validate({"list": list_name, "items": items, "next_cursor": page.next_cursor,
                                           "evaluated_at": now, "policy_version": version})
