"""Webhook subscriptions: create (destination checked, secret shown once), list, get, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status

from ingest.deps import SettingsDep, SubscriptionsDep
from ingest.errors import ApiError
from ingest.schemas import ErrorOut, SubscriptionCreated, SubscriptionIn, SubscriptionOut
from services.destinations import check_destination
from services.errors import DestinationRefused
from services.subscriptions import Subscription

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])


def _out(sub: Subscription) -> SubscriptionOut:
    return SubscriptionOut.model_validate(
        {"id": sub.id, "url": sub.url, "events": sub.events, "created_at": sub.created_at}
    )


def _not_found(sub_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no subscription {sub_id!r}")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionCreated,
    summary="Subscribe a webhook URL to actions",
    responses={422: {"model": ErrorOut, "description": "Invalid body, or the URL's destination is not allowed."}},
)
async def create_subscription(
    body: SubscriptionIn, settings: SettingsDep, store: SubscriptionsDep, request: Request, response: Response
) -> SubscriptionCreated:
    try:
        await asyncio.to_thread(
            check_destination,
            body.url,
            allow_private=settings.allow_private_destinations,
            allow_loopback=settings.allow_loopback_destinations,
        )
    except DestinationRefused as exc:
        raise ApiError(422, "destination_refused", str(exc)) from exc
    sub = await store.create(body.url, list(body.events))
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{sub.id}"
    return SubscriptionCreated(**_out(sub).model_dump(), secret=sub.secret)


@router.get("", response_model=list[SubscriptionOut], summary="List subscriptions (without secrets)")
async def list_subscriptions(store: SubscriptionsDep) -> list[SubscriptionOut]:
    return [_out(sub) for sub in await store.list()]


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    summary="One subscription (without its secret)",
    responses={404: {"model": ErrorOut}},
)
async def get_subscription(subscription_id: str, store: SubscriptionsDep) -> SubscriptionOut:
    sub = await store.get(subscription_id)
    if sub is None:
        raise _not_found(subscription_id)
    return _out(sub)


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
    responses={404: {"model": ErrorOut}},
)
async def delete_subscription(subscription_id: str, store: SubscriptionsDep) -> Response:
    if not await store.delete(subscription_id):
        raise _not_found(subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
