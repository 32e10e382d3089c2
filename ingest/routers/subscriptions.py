"""Webhook subscriptions: create (destination checked, secret shown once), read, change, rotate, test, delete."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Request, Response, status

from ingest.deps import AuthenticatedRoute, EndpointHealthDep, PublisherDep, SettingsDep, SubscriptionsDep
from ingest.errors import ApiError, service_unavailable
from ingest.routers.deliveries import DeliveriesDep
from ingest.schemas import (
    EndpointHealthOut,
    ErrorOut,
    ReplayAccepted,
    ReplayIn,
    RotateSecretIn,
    SecretRotated,
    SecretRotationOut,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    TestDeliveryAccepted,
    TestDeliveryIn,
)
from services.actions import Action, encode_action
from services.contract import from_ms, to_ms
from services.delivery.destinations import check_destination
from services.delivery.digests import Window, digest_item, empty_digest, filled
from services.delivery.health import EndpointHealthStore, Health
from services.delivery.subscriptions import CHAT_DEFAULT_DIGEST, PROVIDER_SECRET_FORMATS, Subscription, default_digest
from services.errors import DestinationRefused, DestinationUnresolved
from services.names import ACTION_DIGEST, ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.settings import IngestSettings

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"], route_class=AuthenticatedRoute)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such subscription."}}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "Invalid body, or the URL's destination is not allowed."}
}


def _rotation(sub: Subscription, now: datetime) -> SecretRotationOut:
    valid = [datetime.fromisoformat(p["expires_at"]) for p in sub.previous_secrets]
    valid = [at for at in valid if at > now]
    return SecretRotationOut(previous_secrets=len(valid), valid_until=max(valid, default=None))


def _health(sub: Subscription, health: Health) -> EndpointHealthOut:
    return EndpointHealthOut(
        state=health.state(enabled=sub.enabled), consecutive_failures=health.consecutive_failures,
        failing_since=from_ms(health.failing_since_ms), circuit_open_until=from_ms(health.circuit_open_until_ms),
        last_status=health.last_status, last_error=health.last_error,
        last_failure_at=from_ms(health.last_failure_ms), last_success_at=from_ms(health.last_success_ms),
    )


def _out(sub: Subscription, now: datetime, health: Health) -> dict[str, Any]:
    fields = ("id", "events", "format", "rate_limit_per_minute", "description", "created_at", "enabled",
              "disabled_reason", "disabled_at")
    return {
        **{name: getattr(sub, name) for name in fields},
        "url": sub.masked_url,
        "filters": vars(sub.filters),
        "digest": vars(sub.digest) if sub.digest else None,
        "mentions": dict(sub.mentions),
        "health": _health(sub, health),
        "secret_rotation": _rotation(sub, now),
    }


async def _full(sub: Subscription, health: EndpointHealthStore) -> SubscriptionOut:
    return SubscriptionOut(**_out(sub, datetime.now(UTC), await health.get(sub.id)))


def _not_found(sub_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no subscription {sub_id!r}")


async def _check_destination(url: str, settings: IngestSettings, request: Request) -> None:
    try:
        await asyncio.to_thread(
            check_destination,
            url,
            allow_private=settings.allow_private_destinations,
            allow_loopback=settings.allow_loopback_destinations,
            resolve=request.app.state.resolver,
        )
    except DestinationRefused as exc:
        raise ApiError(422, "destination_refused", str(exc)) from exc
    except DestinationUnresolved as exc:
        raise service_unavailable(
            "destination_unresolvable",
            "the webhook host cannot be resolved just now (temporary DNS failure); nothing was stored, retry "
            "after Retry-After",
        ) from exc


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionCreated,
    summary="Subscribe a webhook URL to actions",
    responses=_INVALID,
)
async def create_subscription(
    body: SubscriptionIn, settings: SettingsDep, store: SubscriptionsDep, health: EndpointHealthDep,
    request: Request, response: Response,
) -> SubscriptionCreated:
    await _check_destination(body.url, settings, request)
    options = body.model_dump(
        include={"format", "filters", "rate_limit_per_minute", "description", "digest", "mentions"})
    if "digest" not in body.model_fields_set:
        options["digest"] = default_digest(body.format)
    sub = await store.create(body.url, list(body.events), secret=body.secret, **options)
    await health.reset(sub.id)  # an id is never reused, but a hand-made key must not make it look failing
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{sub.id}"
    return SubscriptionCreated(**_out(sub, datetime.now(UTC), Health()), secret=sub.secret)


@router.get("", response_model=list[SubscriptionOut], summary="List subscriptions (without secrets)")
async def list_subscriptions(store: SubscriptionsDep, health: EndpointHealthDep) -> list[SubscriptionOut]:
    now = datetime.now(UTC)
    subs = await store.list()
    healths = await health.get_many(sub.id for sub in subs)
    return [SubscriptionOut(**_out(sub, now, healths[sub.id])) for sub in subs]


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    summary="One subscription (without its secret)",
    responses=_NOT_FOUND,
)
async def get_subscription(
    subscription_id: str, store: SubscriptionsDep, health: EndpointHealthDep
) -> SubscriptionOut:
    sub = await store.get(subscription_id)
    if sub is None:
        raise _not_found(subscription_id)
    return await _full(sub, health)


@router.patch(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    summary="Change some fields of a subscription (the secret changes only by rotation)",
    responses={**_NOT_FOUND, **_INVALID},
)
async def update_subscription(
    subscription_id: str, body: SubscriptionPatch, settings: SettingsDep, store: SubscriptionsDep,
    health: EndpointHealthDep, request: Request,
) -> SubscriptionOut:
    changes = body.changes()
    enabled = changes.pop("enabled", None)
    if "url" in changes:
        await _check_destination(changes["url"], settings, request)
    if "format" in changes:
        current = await store.get(subscription_id)
        if current is None:
            raise _not_found(subscription_id)
        _check_format_switch(current, changes["format"])
    sub = await store.update(subscription_id, changes) if changes else await store.get(subscription_id)
    if sub is not None and enabled is not None:
        if enabled:  # a clean slate first, or the old failures would disable it again at once
            await health.reset(subscription_id)
        sub = await store.set_enabled(subscription_id, enabled, reason="disabled through the API")
    if sub is None:
        raise _not_found(subscription_id)
    return await _full(sub, health)


def _check_format_switch(sub: Subscription, new_format: str) -> None:
    """Feishu/DingTalk sign with the bot's own secret, the others with a generated whsec_ one: a
    switch between the two kinds would leave a secret of the wrong kind."""
    if (sub.format in PROVIDER_SECRET_FORMATS) != (new_format in PROVIDER_SECRET_FORMATS):
        raise ApiError(422, "invalid_request", f"format: cannot switch from {sub.format} to {new_format}: they use "
                       "different kinds of signing secret; create a new subscription and delete this one")


@router.post(
    "/{subscription_id}/rotate-secret",
    response_model=SecretRotated,
    summary="Make a new signing secret current; the old one keeps signing during the overlap",
    responses={**_NOT_FOUND, **_INVALID},
)
async def rotate_subscription_secret(
    subscription_id: str,
    store: SubscriptionsDep,
    body: Annotated[RotateSecretIn | None, Body()] = None,
) -> SecretRotated:
    body = body or RotateSecretIn()
    sub = await store.get(subscription_id)
    if sub is None:
        raise _not_found(subscription_id)
    if body.secret is None and sub.format in PROVIDER_SECRET_FORMATS:
        raise ApiError(422, "invalid_request", f"secret: a {sub.format} bot signs with its own secret; give the "
                       "bot's new secret as `secret` (a generated one would switch signing off)")
    if body.secret is not None and sub.format not in PROVIDER_SECRET_FORMATS:
        raise ApiError(422, "invalid_request", f"secret: may only be given for format "
                       f"{' or '.join(PROVIDER_SECRET_FORMATS)}; this subscription's format is {sub.format}")
    overlap_s = 0 if body.secret is not None else body.overlap_s  # the bot knows only its newest secret
    now = datetime.now(UTC)
    rotated = await store.rotate_secret(subscription_id, overlap_s, now, new_secret=body.secret)
    if rotated is None:
        raise _not_found(subscription_id)
    overlap_until = now + timedelta(seconds=overlap_s) if overlap_s else None
    return SecretRotated(id=rotated.id, secret=rotated.secret, overlap_until=overlap_until,
                         secret_rotation=_rotation(rotated, now))


@router.post(
    "/{subscription_id}/replay",
    response_model=ReplayAccepted,
    summary="Send this subscription's dead-lettered deliveries again (after fixing or re-enabling it)",
    responses={**_NOT_FOUND, **_INVALID, 409: {"model": ErrorOut, "description": "The subscription is disabled."}},
)
async def replay_subscription(
    subscription_id: str,
    store: SubscriptionsDep,
    deliveries: DeliveriesDep,
    body: Annotated[ReplayIn | None, Body()] = None,
) -> ReplayAccepted:
    body = body or ReplayIn()
    sub = await store.get(subscription_id)
    if sub is None:
        raise _not_found(subscription_id)
    if not sub.enabled:
        raise ApiError(409, "subscription_disabled", f"subscription {subscription_id!r} is disabled "
                       f"({sub.disabled_reason}); enable it first with PATCH {{\"enabled\": true}}")
    since_ms = to_ms(body.since) if body.since else None
    replayed = await deliveries.replay_failed(subscription_id, since_ms=since_ms)
    return ReplayAccepted(subscription_id=subscription_id, replayed=replayed)


@router.post(
    "/{subscription_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TestDeliveryAccepted,
    summary="Send a sample action (test: true) to this subscription only, through the notifier",
    responses={**_NOT_FOUND, **_INVALID, 503: {"model": ErrorOut, "description": "Kafka did not acknowledge."}},
)
async def test_subscription(
    subscription_id: str,
    settings: SettingsDep,
    store: SubscriptionsDep,
    publisher: PublisherDep,
    body: Annotated[TestDeliveryIn | None, Body()] = None,
) -> TestDeliveryAccepted:
    body = body or TestDeliveryIn()
    if await store.get(subscription_id) is None:
        raise _not_found(subscription_id)
    now = datetime.now(UTC)
    action = sample_digest(subscription_id, now) if body.type == ACTION_DIGEST else sample_action(
        body.type, subscription_id, now)
    key = str(action.get("customer_id") or "sample-rep").encode()
    await publisher.publish_many(settings.actions_topic, [(key, encode_action(action))])
    return TestDeliveryAccepted(action_id=action["action_id"], subscription_id=subscription_id, type=body.type)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_action(action_type: str, subscription_id: str, now: datetime) -> Action:
    """A realistic action of `action_type` for customer `sample-customer`, marked `test` and addressed."""
    pause_until = _iso(now + timedelta(days=9))
    samples: dict[str, dict[str, Any]] = {
        ACTION_RE_ENGAGE: {
            "status": "dormant", "previous_status": "normal",
            "reasons": [{"rule": "cadence_overdue", "window": "since_last_touch", "observed": 41.5, "threshold": 30.0}],
            "suggestion": "Neglected: last touch 42 days ago; cadence for stage negotiation is 30 days. "
                          "Reach out on email (answers there most), ideally around 10:00 Asia/Shanghai.",
            "counts": {"24h": {"touches": 0, "counted_touches": 0, "responses": 0},
                       "30d": {"touches": 0, "counted_touches": 0, "responses": 0},
                       "90d": {"touches": 3, "counted_touches": 3, "responses": 1}},
        },
        ACTION_RECOVERED: {
            "status": "normal", "previous_status": "throttled",
            "reasons": [{"rule": "frequency_recovered", "window": "30d", "observed": 2.0, "threshold": 2.0}],
            "suggestion": "Back in band: 2 touches in 30d. Normal cadence may resume.",
            "counts": {"24h": {"touches": 0, "counted_touches": 0, "responses": 1},
                       "30d": {"touches": 2, "counted_touches": 2, "responses": 1}},
        },
    }
    throttle = {
        "status": "throttled", "previous_status": "normal", "pause_until": pause_until,
        "reasons": [{"rule": "frequency_cap", "window": "30d", "observed": 13.0, "threshold": 12.0}],
        "suggestion": f"Cool down: 13 touches in 30d (cap 12). Pause non-transactional touches until {pause_until}.",
        "counts": {"24h": {"touches": 1, "counted_touches": 1, "responses": 0},
                   "30d": {"touches": 13, "counted_touches": 13, "responses": 0}},
    }
    return cast(Action, {
        "v": 1, "action_id": "act_test_" + secrets.token_hex(12), "type": action_type,
        "customer_id": "sample-customer", "at": _iso(now), **samples.get(action_type, throttle),
        "owner_rep_id": "sample-rep",
        "profile": {"tier": "A", "stage": "negotiation", "owner_rep_id": "sample-rep", "do_not_contact": False},
        "test": True, "subscription_id": subscription_id,
    })


def sample_digest(subscription_id: str, now: datetime) -> Action:
    """A sample digest (as the notifier builds them) of three alerts for `sample-rep`, marked `test`."""
    window = Window.at(to_ms(now), CHAT_DEFAULT_DIGEST)
    items = [sample_action(kind, subscription_id, now - timedelta(minutes=n)) for n, kind in
             enumerate((ACTION_THROTTLE, ACTION_THROTTLE, ACTION_RE_ENGAGE))]
    for n, item in enumerate(items):
        item["customer_id"] = f"sample-customer-{n + 1}"
    digest = filled(empty_digest("dig_test_" + secrets.token_hex(12), "sample-rep", window),
                    [digest_item(item) for item in reversed(items)])
    return cast(Action, {**digest, "test": True, "subscription_id": subscription_id})


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
    responses=_NOT_FOUND,
)
async def delete_subscription(
    subscription_id: str, store: SubscriptionsDep, health: EndpointHealthDep
) -> Response:
    if not await store.delete(subscription_id):
        raise _not_found(subscription_id)
    await health.reset(subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
