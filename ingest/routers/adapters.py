"""Provider adapters: /v1/adapters/sendgrid, /mailgun, /twilio/status, /twilio/inbound, /crm/{mapping},
and GET /v1/adapters/rejected.

Each webhook route, in this order (docs/adapters.md):
1. authenticates before it parses anything (ingest/routers/adapter_auth.py): the provider's
   signature when its key is configured, else a URL token or a bearer API key; 401 otherwise;
2. admits the call against the caller's rate (429 with Retry-After);
3. parses the body (400 when it is not what the provider sends) and counts its items: more than one
   request may carry is 413 naming the limit, before anything is ingested — never a part of it;
4. charges the caller's rate for the items, maps and stores them, and answers for every item:
   accepted, duplicate, or not stored (unmapped, invalid, ignored) with its index and reason.
An item mapping to no customer, or refused by the contract, is answered 2xx (a retry would not
change it) and kept in the rejected store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import APIKeyQuery

from ingest.accept import AcceptPath, EventsInFlight
from ingest.adapters import crm, mailgun, sendgrid, twilio
from ingest.adapters.common import Mapped, TooManyRecords
from ingest.adapters.intake import AdapterOutcome, ingest_mapped
from ingest.adapters.rejected import RejectedStore
from ingest.deps import (
    AcceptDep,
    AuthenticatedRoute,
    IdentityDep,
    MetricsDep,
    RedisDep,
    RejectedDep,
    SettingsDep,
    bearer,
    charge_items,
)
from ingest.errors import REFUSED_STAGE, ApiError, broker_unavailable, service_unavailable
from ingest.identity import IdentityMap
from ingest.routers.adapter_auth import Caller, admitted, provider_caller, refused, token_or_key, too_many
from ingest.schemas import AdapterAccepted, ErrorOut, RejectedPage
from ingest.validation import BodyRefused, parse_json
from services.errors import BrokerUnavailable
from services.metrics import IngestMetrics
from services.redisio import REDIS_ERRORS
from services.settings import IngestSettings

adapter_token = APIKeyQuery(
    name="token", auto_error=False, scheme_name="AdapterToken",
    description="The adapter's FATIGUE_<PROVIDER>_TOKEN, when the provider's signing key is not configured.",
)
webhooks = APIRouter(tags=["adapters"], dependencies=[Depends(adapter_token), Depends(bearer)])
"""Routes the providers call. The two dependencies only document the token and bearer options
(they never refuse); each route authenticates itself, by signature when a key is configured."""
rejected_router = APIRouter(tags=["adapters"], route_class=AuthenticatedRoute)
"""GET /v1/adapters/rejected: behind the API key like every other read."""

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not what the provider sends."},
    401: {"model": ErrorOut, "description": "Signature missing, invalid or stale, or no valid token: nothing "
          "ingested."},
    413: {"model": ErrorOut, "description": "Body too large, or more items than one request may carry: nothing "
          "ingested."},
    429: {"model": ErrorOut, "description": "The caller is over its rate: nothing ingested, retry after Retry-After."},
    503: {"model": ErrorOut, "description": "The event log did not acknowledge: nothing stored, the provider retries."},
}


def _json_body(raw: bytes, metrics: IngestMetrics, provider: str) -> Any:
    try:
        return parse_json(raw)
    except BodyRefused as exc:
        metrics.adapter_refused.labels(provider=provider, reason="body").inc()
        raise ApiError(exc.status, exc.code, exc.message) from exc


async def _store(mapped: Mapped, provider: str, intake: AcceptDep, identities: IdentityDep, rejected: RejectedDep,
                 metrics: IngestMetrics, now: datetime) -> AdapterOutcome:
    try:
        outcome = await ingest_mapped(mapped, provider=provider, accept=intake, identities=identities,
                                      rejected=rejected, now=now)
    except BrokerUnavailable as exc:
        metrics.adapter_refused.labels(provider=provider, reason="broker_unavailable").inc()
        raise broker_unavailable(exc) from exc
    except EventsInFlight as exc:
        raise service_unavailable("events_in_flight", f"{exc}; nothing was stored, retry") from exc
    for outcome_name, count in (("accepted", outcome.accepted), ("duplicate", outcome.duplicates),
                                ("unmapped", outcome.unmapped), ("invalid", outcome.invalid),
                                ("ignored", outcome.ignored)):
        if count:
            metrics.adapter_events.labels(provider=provider, outcome=outcome_name).inc(count)
    for reason in outcome.refused_reasons:
        metrics.refused_records.labels(stage=REFUSED_STAGE, reason=reason).inc()
    return outcome


@webhooks.post("/adapters/sendgrid", response_model=AdapterAccepted, responses=_RESPONSES,
               summary="SendGrid Event Webhook",
               description="A JSON array of SendGrid events (at most FATIGUE_ADAPTER_MAX_RECORDS); signed (ECDSA) "
               "when FATIGUE_SENDGRID_VERIFICATION_KEY is set, within FATIGUE_SENDGRID_REPLAY_WINDOW_S. "
               "See docs/adapters.md#sendgrid.")
async def sendgrid_events(request: Request, settings: SettingsDep, metrics: MetricsDep, intake: AcceptDep,
                          identities: IdentityDep, rejected: RejectedDep) -> Any:
    if request.app.state.sendgrid_key is not None:
        raw = await _sendgrid_signed(request, settings, metrics)
    else:
        caller = token_or_key(request, metrics, "sendgrid", settings.sendgrid_token,
                              "FATIGUE_SENDGRID_VERIFICATION_KEY")
        admitted(request, metrics, "sendgrid", caller)
        raw = await request.body()
    try:
        mapped = sendgrid.map_events(_json_body(raw, metrics, "sendgrid"), max_records=settings.adapter_max_records)
    except TooManyRecords as exc:
        raise too_many(metrics, "sendgrid", exc, "FATIGUE_ADAPTER_MAX_RECORDS") from exc
    charge_items(request, mapped.received)
    return (await _store(mapped, "sendgrid", intake, identities, rejected, metrics, datetime.now(UTC))).body()


async def _sendgrid_signed(request: Request, settings: IngestSettings, metrics: IngestMetrics) -> bytes:
    """The raw body of a call SendGrid signed, recently; 401 (body unread when nothing is signed) otherwise."""
    signature = request.headers.get(sendgrid.SIGNATURE_HEADER)
    timestamp = request.headers.get(sendgrid.TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise refused(metrics, "sendgrid", "signature", f"sendgrid: no {sendgrid.SIGNATURE_HEADER} / "
                      f"{sendgrid.TIMESTAMP_HEADER}: the event webhook must be signed")
    raw = await request.body()
    if not sendgrid.verify(request.app.state.sendgrid_key, signature, timestamp, raw):
        raise refused(metrics, "sendgrid", "signature", "sendgrid: invalid event webhook signature")
    window_s = settings.sendgrid_replay_window_s
    if not sendgrid.fresh(timestamp, time.time(), window_s):
        raise refused(metrics, "sendgrid", "replay", f"sendgrid: signature timestamp is more than {window_s}s away "
                      "(FATIGUE_SENDGRID_REPLAY_WINDOW_S)")
    admitted(request, metrics, "sendgrid", provider_caller(request, "sendgrid"))
    return raw


@webhooks.post("/adapters/mailgun", response_model=AdapterAccepted, responses=_RESPONSES,
               summary="Mailgun webhook",
               description="One Mailgun event (`signature` + `event-data`); the signature is verified when "
               "FATIGUE_MAILGUN_SIGNING_KEY is set, within the replay window and once per token. "
               "See docs/adapters.md#mailgun.")
async def mailgun_event(request: Request, settings: SettingsDep, metrics: MetricsDep, intake: AcceptDep,
                        identities: IdentityDep, rejected: RejectedDep, redis: RedisDep) -> Any:
    token_key = None
    if settings.mailgun_signing_key is not None:
        body, token_key = await _mailgun_signed(request, settings, metrics, redis)
    else:
        caller = token_or_key(request, metrics, "mailgun", settings.mailgun_token, "FATIGUE_MAILGUN_SIGNING_KEY")
        admitted(request, metrics, "mailgun", caller)
        body = _json_body(await request.body(), metrics, "mailgun")
    try:
        mapped = mailgun.map_event(body)
        return (await _store(mapped, "mailgun", intake, identities, rejected, metrics, datetime.now(UTC))).body()
    except BaseException:
        if token_key is not None:  # nothing stored: Mailgun's retry of this very request must get in
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await asyncio.shield(redis.delete(token_key))
        raise


async def _mailgun_signed(request: Request, settings: IngestSettings, metrics: IngestMetrics,
                          redis: RedisDep) -> tuple[Any, str]:
    """The body of a call Mailgun signed, recently, with a token not seen before (and that token's
    Redis key); 401 otherwise. Mailgun's signature is inside its JSON body: a body that is not JSON
    carries none (401, not 400). The rate is checked before the token is spent, so a 429 leaves
    Mailgun's retry of the same request acceptable."""
    assert settings.mailgun_signing_key is not None
    try:
        body = parse_json(await request.body())
    except BodyRefused:
        body = None
    signature = body.get("signature") if isinstance(body, dict) else None
    if not mailgun.verify(settings.mailgun_signing_key.get_secret_value().encode(), signature):
        raise refused(metrics, "mailgun", "signature", "mailgun: missing or invalid signature")
    assert isinstance(signature, dict)
    window_s = settings.mailgun_replay_window_s
    if not mailgun.fresh(signature, time.time(), window_s):
        raise refused(metrics, "mailgun", "replay", f"mailgun: signature timestamp is more than {window_s}s away")
    admitted(request, metrics, "mailgun", provider_caller(request, "mailgun"))
    token_key = settings.keys.webhook_token("mailgun", str(signature["token"]))
    if not await redis.set(token_key, "1", nx=True, ex=2 * window_s):
        raise refused(metrics, "mailgun", "replay", "mailgun: this signature token was used before (replay)")
    return body, token_key


def _form(text: str, *, strict: bool) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, strict_parsing=strict and bool(text.strip()))


def _twilio_params(raw: bytes, metrics: IngestMetrics) -> list[tuple[str, str]]:
    """The form parameters of an authenticated call; 400 when the body is not form-encoded UTF-8."""
    try:
        return _form(raw.decode("utf-8"), strict=True)
    except (UnicodeDecodeError, ValueError) as exc:
        metrics.adapter_refused.labels(provider="twilio", reason="body").inc()
        message = f"twilio: the body is not application/x-www-form-urlencoded: {exc}"
        raise ApiError(400, "invalid_body", message) from exc


def _twilio_url(request: Request, base_url: str | None) -> str:
    """The URL Twilio signed: the configured public base URL (behind a proxy) + path + query."""
    if base_url is None:
        return str(request.url)
    query = request.url.query
    return base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def _twilio(request: Request, settings: SettingsDep, metrics: IngestMetrics) -> list[tuple[str, str]]:
    """Authenticate, admit, then parse. Twilio signs the URL and the form parameters (not the raw
    body): without a signature the body is not read; with one, the parameters are read leniently
    (every name=value pair, nothing refused) only to check it, and parsed strictly only once it holds."""
    if settings.twilio_auth_token is None:
        admitted(request, metrics, "twilio", token_or_key(request, metrics, "twilio", settings.twilio_token,
                                                          "FATIGUE_TWILIO_AUTH_TOKEN"))
        return _twilio_params(await request.body(), metrics)
    signature = request.headers.get(twilio.SIGNATURE_HEADER)
    if not signature:
        raise refused(metrics, "twilio", "signature", f"twilio: no {twilio.SIGNATURE_HEADER}")
    raw = await request.body()
    url = _twilio_url(request, settings.twilio_public_base_url)
    signed = _form(raw.decode("utf-8", "replace"), strict=False)
    if not twilio.verify(settings.twilio_auth_token.get_secret_value().encode(), url, signed, signature):
        raise refused(metrics, "twilio", "signature", f"twilio: invalid {twilio.SIGNATURE_HEADER}")
    admitted(request, metrics, "twilio", provider_caller(request, "twilio"))
    return _twilio_params(raw, metrics)


def _twiml() -> Response:
    return Response(TWIML_EMPTY, media_type="text/xml")


_TWIML_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/xml": {}}, "description": "Empty TwiML: Twilio sends no reply."}}


@webhooks.post("/adapters/twilio/status", response_class=Response, responses={**_RESPONSES, **_TWIML_OK},
               summary="Twilio Messaging status callback",
               description="Form-encoded status callback of an outbound message (`customer_id` query parameter "
               "optional). See docs/adapters.md#twilio.")
async def twilio_status(request: Request, settings: SettingsDep, metrics: MetricsDep, intake: AcceptDep,
                        identities: IdentityDep, rejected: RejectedDep) -> Response:
    return await _twilio_webhook(twilio.map_status, request, settings, metrics, intake, identities, rejected)


@webhooks.post("/adapters/twilio/inbound", response_class=Response, responses={**_RESPONSES, **_TWIML_OK},
               summary="Twilio Messaging incoming message",
               description="Form-encoded incoming message: a reply, or STOP/START keywords. "
               "See docs/adapters.md#twilio.")
async def twilio_inbound(request: Request, settings: SettingsDep, metrics: MetricsDep, intake: AcceptDep,
                         identities: IdentityDep, rejected: RejectedDep) -> Response:
    return await _twilio_webhook(twilio.map_inbound, request, settings, metrics, intake, identities, rejected)


async def _twilio_webhook(map_params: Callable[[twilio.Params, str | None, datetime, str | None], Mapped],
                          request: Request, settings: IngestSettings, metrics: IngestMetrics, intake: AcceptPath,
                          identities: IdentityMap, rejected: RejectedStore) -> Response:
    """Both Twilio callbacks: verify, map the form parameters, store, answer empty TwiML."""
    params = await _twilio(request, settings, metrics)
    now = datetime.now(UTC)
    mapped = map_params(params, request.query_params.get(twilio.CUSTOMER_ID_PARAM), now,
                        settings.identity_default_region)
    await _store(mapped, "twilio", intake, identities, rejected, metrics, now)
    return _twiml()


@webhooks.post("/adapters/crm/{mapping}", response_model=AdapterAccepted,
               responses={**_RESPONSES, 404: {"model": ErrorOut, "description": "No such mapping."}},
               summary="CRM activities through a mapping file",
               description="A record or a list of records (or a body holding them, e.g. a SOQL result) mapped "
               "by the named mapping (hubspot-engagement, hubspot-call, hubspot-meeting, salesforce-task, "
               "salesforce-event, or one of FATIGUE_CRM_MAPPINGS_DIR); at most FATIGUE_MAX_EVENTS_PER_REQUEST "
               "records. See docs/adapters.md#crm-activities.")
async def crm_activities(mapping: str, request: Request, settings: SettingsDep, metrics: MetricsDep,
                         intake: AcceptDep, identities: IdentityDep, rejected: RejectedDep) -> Any:
    caller: Caller = token_or_key(request, metrics, "crm", settings.crm_token, None)
    admitted(request, metrics, "crm", caller)
    known: dict[str, crm.Mapping] = request.app.state.crm_mappings
    if mapping not in known:
        raise ApiError(404, "not_found", f"no CRM mapping {mapping!r}; known: {', '.join(sorted(known))}")
    body = _json_body(await request.body(), metrics, "crm")
    try:
        mapped = crm.map_records(known[mapping], body, settings.identity_default_region,
                                 max_records=settings.max_events_per_request)
    except TooManyRecords as exc:
        raise too_many(metrics, "crm", exc, "FATIGUE_MAX_EVENTS_PER_REQUEST") from exc
    charge_items(request, mapped.received)
    provider = f"crm.{mapping}"
    return (await _store(mapped, provider, intake, identities, rejected, metrics, datetime.now(UTC))).body()


@rejected_router.get("/adapters/rejected", response_model=RejectedPage,
                     summary="Provider events no customer was found for",
                     description="Newest first. Kept FATIGUE_ADAPTER_REJECTED_TTL_S, at most "
                     "FATIGUE_ADAPTER_REJECTED_MAX entries. Page with `before` = the previous page's `next`.")
async def list_rejected(
    rejected: RejectedDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(pattern=r"^\d{1,15}-\d{1,10}$", description="Cursor: an entry id.")] = None,
    provider: Annotated[str | None, Query(max_length=100)] = None,
) -> RejectedPage:
    now_ms = int(time.time() * 1000)
    items, cursor = await rejected.list(now_ms=now_ms, limit=limit, before=before, provider=provider)
    return RejectedPage.model_validate({"items": items, "next": cursor})
