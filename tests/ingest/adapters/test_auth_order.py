"""Authentication before parsing, on every route (issue 17, finding 10): an unauthenticated request
is 401 whatever its body; and a signed SendGrid request is only good within its freshness window.
Over real HTTP. The 401s need no broker or Redis: the app points at closed ports, never reached."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import APIRouter
from pydantic import SecretStr

from ingest.adapters.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from ingest.app import create_app
from ingest.deps import require_authenticated_routes
from services.settings import CommonSettings, IngestSettings
from tests.ingest.adapters.samples import SendGridSigner, load_form, load_json, twilio_sign
from tests.ingest.helpers import consume, ingest_settings_for, serving_api

TWILIO_TOKEN = "twilio-auth-token-0123456789"
MAILGUN_KEY = "mailgun-signing-key-0123456789"
URL_TOKEN = "url-token-for-tests-0123456789"
NO_BEARER = {"Authorization": ""}
NOT_A_FORM = b"\xff\xfeBody=%%&&==&MessageSid"
NOT_JSON = b'{"signature": {"token": '
FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}
PROVIDER_WEBHOOKS = {"/v1/adapters/sendgrid", "/v1/adapters/mailgun", "/v1/adapters/twilio/status",
                     "/v1/adapters/twilio/inbound", "/v1/adapters/crm/{mapping}"}


@pytest.fixture(scope="module")
def signer() -> SendGridSigner:
    return SendGridSigner()


@pytest.fixture
async def signed_api(signer: SendGridSigner) -> AsyncIterator[httpx.AsyncClient]:
    """Every provider's signing key configured."""
    settings = ingest_settings_for(sendgrid_verification_key=signer.public_key_b64,
                                   mailgun_signing_key=SecretStr(MAILGUN_KEY),
                                   twilio_auth_token=SecretStr(TWILIO_TOKEN))
    async with serving_api(settings) as client:
        yield client


@pytest.fixture
async def token_api() -> AsyncIterator[httpx.AsyncClient]:
    """No signing key: URL tokens (or a bearer key) instead."""
    token = SecretStr(URL_TOKEN)
    settings = ingest_settings_for(sendgrid_token=token, mailgun_token=token, twilio_token=token, crm_token=token)
    async with serving_api(settings) as client:
        yield client


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/v1/adapters/twilio/status", "/v1/adapters/twilio/inbound"])
async def test_twilio_without_a_valid_signature_is_401_whatever_the_body(
        signed_api: httpx.AsyncClient, path: str) -> None:
    """The finding: a body that is not a form answered 400 before the signature was looked at."""
    assert_401(await signed_api.post(path, content=NOT_A_FORM, headers={**FORM, **NO_BEARER}))
    forged = twilio_sign("not-the-auth-token-000", "http://127.0.0.1" + path, [])
    assert_401(await signed_api.post(path, content=NOT_A_FORM,
                                     headers={**FORM, **NO_BEARER, "X-Twilio-Signature": forged}))


async def test_twilio_signed_over_its_form_still_verifies(signed_api: httpx.AsyncClient) -> None:
    """The lenient reading used to check a signature gives Twilio's parameters for a real callback."""
    path = "/v1/adapters/twilio/inbound"
    params = load_form("twilio_inbound_reply.txt")
    signature = twilio_sign(TWILIO_TOKEN, str(signed_api.base_url).rstrip("/") + path, params)
    response = await signed_api.post(path, content=urlencode(params),
                                     headers={**FORM, **NO_BEARER, "X-Twilio-Signature": signature})
    assert response.status_code != 401, response.text  # past authentication (no broker here: 503)


async def test_mailgun_body_that_is_not_json_carries_no_signature(signed_api: httpx.AsyncClient) -> None:
    assert_401(await signed_api.post("/v1/adapters/mailgun", content=NOT_JSON, headers={**JSON, **NO_BEARER}))


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/adapters/sendgrid", NOT_JSON, JSON),
    ("/v1/adapters/mailgun", NOT_JSON, JSON),
    ("/v1/adapters/twilio/status", NOT_A_FORM, FORM),
    ("/v1/adapters/twilio/inbound", NOT_A_FORM, FORM),
    ("/v1/adapters/crm/salesforce-task", NOT_JSON, JSON),
])
async def test_without_a_token_or_key_every_webhook_is_401_whatever_the_body(
        token_api: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]) -> None:
    assert_401(await token_api.post(path, content=body, headers={**headers, **NO_BEARER}))
    assert_401(await token_api.post(f"{path}?token=wrong-token-0123456789", content=body,
                                    headers={**headers, **NO_BEARER}))
    authenticated = await token_api.post(f"{path}?token={URL_TOKEN}", content=body, headers={**headers, **NO_BEARER})
    assert authenticated.status_code == 400, authenticated.text  # then the body is looked at


def operations_behind_the_key() -> list[tuple[str, str]]:
    paths = create_app(ingest_settings_for()).openapi()["paths"]
    return [(method.upper(), path.replace("{customer_id}", "c1").replace("{subscription_id}", "sub_x")
             .replace("{delivery_id}", "msg_x"))
            for path, operations in paths.items() if path.startswith("/v1") and path not in PROVIDER_WEBHOOKS
            for method in operations]


async def test_every_operation_behind_the_key_is_401_before_its_body_is_parsed() -> None:
    """FastAPI parses a declared body before it solves dependencies: a broken body answered 400 unauthenticated."""
    async with serving_api(ingest_settings_for()) as api:
        for method, path in operations_behind_the_key():
            response = await api.request(method, path, content=NOT_JSON, headers={**JSON, **NO_BEARER})
            assert response.status_code == 401, (method, path, response.text)


def test_a_router_behind_the_key_must_authenticate_before_reading_bodies() -> None:
    stray = APIRouter()

    @stray.put("/v1/anything")
    async def anything(body: dict[str, int]) -> dict[str, int]:
        return body

    with pytest.raises(TypeError, match="AuthenticatedRoute"):
        require_authenticated_routes(stray)


# ---- SendGrid freshness ----


def sendgrid_request(signer: SendGridSigner, age_s: int) -> tuple[bytes, dict[str, str]]:
    events = [e for e in load_json("sendgrid_events.json") if e["event"] == "click"]
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()) - age_s)
    return body, {**JSON, **NO_BEARER, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signer.sign(timestamp, body)}


async def test_a_day_old_signed_sendgrid_request_is_refused(signed_api: httpx.AsyncClient,
                                                            signer: SendGridSigner) -> None:
    """The finding: a day-old signed request was accepted (only de-duplication, within its TTL, stopped replays)."""
    body, headers = sendgrid_request(signer, age_s=24 * 3600)
    response = await signed_api.post("/v1/adapters/sendgrid", content=body, headers=headers)
    assert_401(response)
    assert "more than 300s away (FATIGUE_SENDGRID_REPLAY_WINDOW_S)" in response.json()["error"]["message"]
    future_body, future = sendgrid_request(signer, age_s=-3600)
    assert_401(await signed_api.post("/v1/adapters/sendgrid", content=future_body, headers=future))
    metrics = (await signed_api.get("/metrics")).text
    assert 'fatigue_ingest_adapter_requests_refused_total{provider="sendgrid",reason="replay"} 2.0' in metrics


@pytest.mark.integration
async def test_the_sendgrid_window_is_configurable(common_settings: CommonSettings, signer: SendGridSigner) -> None:
    settings: IngestSettings = ingest_settings_for(common_settings, sendgrid_verification_key=signer.public_key_b64,
                                                   sendgrid_replay_window_s=7200)
    async with serving_api(settings) as api:
        body, headers = sendgrid_request(signer, age_s=3600)
        response = await api.post("/v1/adapters/sendgrid", content=body, headers=headers)
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
        old_body, old = sendgrid_request(signer, age_s=3 * 3600)
        assert_401(await api.post("/v1/adapters/sendgrid", content=old_body, headers=old))
    records = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic, expected=1)
    assert len(records) == 1
