"""The adapter routes against the session's broker and Redis: signatures, replay, tokens, the
identity map and the rejected store. What is ingested is read back from the events topic."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from ingest.adapters.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.settings import CommonSettings, IngestSettings
from tests.ingest.adapters.samples import SendGridSigner, load_form, load_json, mailgun_sign, twilio_sign
from tests.ingest.helpers import consume, ingest_settings_for, running_api, value_of

pytestmark = pytest.mark.integration

MAILGUN_KEY = "mailgun-signing-key-0123456789"
TWILIO_TOKEN = "twilio-auth-token-0123456789"
PUBLIC_BASE = "https://fatigue.example.com"
NO_BEARER = {"Authorization": ""}


@pytest.fixture(scope="module")
def signer() -> SendGridSigner:
    return SendGridSigner()


@pytest.fixture
def signed_settings(common_settings: CommonSettings, signer: SendGridSigner) -> IngestSettings:
    return ingest_settings_for(common_settings, sendgrid_verification_key=signer.public_key_b64,
                               mailgun_signing_key=SecretStr(MAILGUN_KEY), twilio_auth_token=SecretStr(TWILIO_TOKEN),
                               twilio_public_base_url=PUBLIC_BASE, identity_hash_key=SecretStr("h" * 32))


@pytest.fixture
async def api(signed_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(signed_settings) as client:
        yield client


async def stored(settings: CommonSettings, expected: int, settle_s: float = 1.0) -> list[dict[str, Any]]:
    records = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=expected,
                            timeout_s=10, settle_s=settle_s)
    return [value_of(r) for r in records]


async def profile(api: httpx.AsyncClient, customer_id: str, **identities: list[str]) -> None:
    response = await api.put(f"/v1/customers/{customer_id}/profile", json={"stage": "prospect", **identities})
    assert response.status_code == 202, response.text


def sendgrid_body() -> bytes:
    events = [e for e in load_json("sendgrid_events.json") if e["event"] in ("delivered", "open", "click")]
    return json.dumps(events).encode()


async def post_sendgrid(api: httpx.AsyncClient, signer: SendGridSigner, body: bytes,
                        signature: str | None = None) -> httpx.Response:
    timestamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature or signer.sign(timestamp, body),
               "content-type": "application/json"}
    return await api.post("/v1/adapters/sendgrid", content=body, headers=headers)


async def test_sendgrid_signed_events_are_mapped_to_the_customer_of_the_email(
        api: httpx.AsyncClient, signer: SendGridSigner, signed_settings: IngestSettings) -> None:
    await profile(api, "cust-sg", emails=["Example@Test.com"])
    response = await post_sendgrid(api, signer, sendgrid_body())
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "accepted": 3, "duplicates": 0, "unmapped": 0, "invalid": 0,
                               "ignored": 0, "rejected": []}
    records = await stored(signed_settings, expected=3)
    assert sorted((r["event"]["customer_id"], r["event"].get("kind", "touch")) for r in records) == [
        ("cust-042", "click"), ("cust-sg", "open"), ("cust-sg", "touch")]  # the click carried its customer_id
    assert {r["producer"] for r in records} == {"adapter:sendgrid"}
    again = await post_sendgrid(api, signer, sendgrid_body())  # SendGrid retries: stored once
    assert again.json()["duplicates"] == 3


@pytest.mark.parametrize("signature", ["missing", "other-body", "garbage"])
async def test_sendgrid_unsigned_or_badly_signed_is_refused_with_nothing_stored(
        api: httpx.AsyncClient, signer: SendGridSigner, signed_settings: IngestSettings, signature: str) -> None:
    body = sendgrid_body()
    timestamp = str(int(time.time()))
    headers = {"content-type": "application/json", TIMESTAMP_HEADER: timestamp}
    if signature == "other-body":
        headers[SIGNATURE_HEADER] = signer.sign(timestamp, body + b" ")
    elif signature == "garbage":
        headers[SIGNATURE_HEADER] = "MEUCIQ=="
    response = await api.post("/v1/adapters/sendgrid", content=body, headers=headers)  # bearer key is no substitute
    assert response.status_code == 401, response.text
    assert await stored(signed_settings, expected=0, settle_s=1.0) == []


async def test_mailgun_signature_replay_window_and_single_use_token(
        api: httpx.AsyncClient, signed_settings: IngestSettings) -> None:
    await profile(api, "cust-mg", emails=["alice@example.com"])
    now = int(time.time())
    body = mailgun_sign(load_json("mailgun_delivered.json"), MAILGUN_KEY, now, "t" * 50)
    first = await api.post("/v1/adapters/mailgun", json=body)
    assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    replay = await api.post("/v1/adapters/mailgun", json=body)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]["message"]
    stale = mailgun_sign(load_json("mailgun_opened.json"), MAILGUN_KEY, now - 3600, "s" * 50)
    assert (await api.post("/v1/adapters/mailgun", json=stale)).status_code == 401
    forged = mailgun_sign(load_json("mailgun_opened.json"), "not-the-key-000000", now, "f" * 50)
    assert (await api.post("/v1/adapters/mailgun", json=forged)).status_code == 401
    unsigned = load_json("mailgun_opened.json")
    del unsigned["signature"]
    assert (await api.post("/v1/adapters/mailgun", json=unsigned)).status_code == 401
    records = await stored(signed_settings, expected=2)
    assert [(r["event"]["customer_id"], r["event"]["type"]) for r in records] == [("cust-mg", "touch")]


async def test_twilio_signed_over_the_public_url_and_stop_closes_nothing_else(
        api: httpx.AsyncClient, signed_settings: IngestSettings) -> None:
    await profile(api, "cust-tw", phones=["+1 555 867 5310"])
    params = load_form("twilio_inbound_stop.txt")
    path = "/v1/adapters/twilio/inbound"
    good = twilio_sign(TWILIO_TOKEN, PUBLIC_BASE + path, params)
    headers = {"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": good}
    response = await api.post(path, content=urlencode(params), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml") and "<Response>" in response.text
    as_seen_here = twilio_sign(TWILIO_TOKEN, "http://ingest.test" + path, params)  # not the URL Twilio called
    refused = await api.post(path, content=urlencode(params),
                             headers={**headers, "X-Twilio-Signature": as_seen_here})
    assert refused.status_code == 401
    tampered = [(k, "START" if k == "Body" else v) for k, v in params]
    assert (await api.post(path, content=urlencode(tampered), headers=headers)).status_code == 401
    records = await stored(signed_settings, expected=2)
    assert [(r["event"]["customer_id"], r["event"]["kind"]) for r in records] == [("cust-tw", "unsubscribe")]


async def test_unmappable_events_answer_2xx_and_are_kept_in_the_rejected_store(
        api: httpx.AsyncClient, signer: SendGridSigner, signed_settings: IngestSettings) -> None:
    body = json.dumps([dict(load_json("sendgrid_events.json")[3], email="nobody@nowhere.example")]).encode()
    response = await post_sendgrid(api, signer, body)
    assert response.status_code == 200 and response.json()["unmapped"] == 1, response.text
    page = (await api.get("/v1/adapters/rejected")).json()
    (entry,) = page["items"]
    assert (entry["provider"], entry["reason"], entry["recipient"]) == ("sendgrid", "no_customer",
                                                                        "nobody@nowhere.example")
    assert entry["event"]["kind"] == "open" and entry["source"]["sg_event_id"] == "FOTFFO0ecsBE-zxFXfs6WA=="
    assert (await api.get("/v1/adapters/rejected", params={"provider": "mailgun"})).json()["items"] == []
    assert (await api.get("/v1/adapters/rejected", headers=NO_BEARER)).status_code == 401
    assert await stored(signed_settings, expected=0, settle_s=1.0) == []


async def test_the_rejected_store_pages_newest_first(api: httpx.AsyncClient, signer: SendGridSigner) -> None:
    base = load_json("sendgrid_events.json")[3]
    body = json.dumps([dict(base, email=f"n{i}@x.example", sg_event_id=f"ev{i}") for i in range(5)]).encode()
    assert (await post_sendgrid(api, signer, body)).json()["unmapped"] == 5
    first = (await api.get("/v1/adapters/rejected", params={"limit": 3})).json()
    second = (await api.get("/v1/adapters/rejected", params={"limit": 3, "before": first["next"]})).json()
    recipients = [e["recipient"] for e in first["items"] + second["items"]]
    assert recipients == [f"n{i}@x.example" for i in reversed(range(5))]  # newest first
    assert second["next"] is None


@pytest.fixture
async def token_api(common_settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = ingest_settings_for(common_settings, sendgrid_token=SecretStr("sg-url-token-0123456789"),
                                   crm_token=SecretStr("crm-url-token-0123456789"))
    async with running_api(settings) as client:
        yield client


async def test_without_a_signing_key_a_token_or_the_api_key_is_required(
        token_api: httpx.AsyncClient, common_settings: CommonSettings) -> None:
    body = sendgrid_body()
    plain = {"content-type": "application/json"}
    assert (await token_api.post("/v1/adapters/sendgrid", content=body, headers={**plain, **NO_BEARER})).status_code \
        == 401
    wrong = await token_api.post("/v1/adapters/sendgrid?token=sg-url-token-WRONG", content=body,
                                 headers={**plain, **NO_BEARER})
    assert wrong.status_code == 401
    assert (await token_api.post("/v1/adapters/mailgun", json=load_json("mailgun_opened.json"),
                                 headers=NO_BEARER)).status_code == 401  # no token configured for mailgun
    ok = await token_api.post("/v1/adapters/sendgrid?token=sg-url-token-0123456789", content=body,
                              headers={**plain, **NO_BEARER})
    assert ok.status_code == 200 and ok.json()["unmapped"] == 2, ok.text  # no profile has the email
    crm = await token_api.post("/v1/adapters/crm/salesforce-task", json=load_json("salesforce_tasks_query.json"))
    assert crm.status_code == 200 and crm.json() == {
        "received": 3, "accepted": 2, "duplicates": 0, "unmapped": 0, "invalid": 0, "ignored": 1,
        "rejected": [{"index": 2, "outcome": "ignored", "reason": "Status is 'Not Started'"}]}, crm.text  # bearer key
    assert (await token_api.post("/v1/adapters/crm/nope", json={})).status_code == 404
    records = await stored(common_settings, expected=3)
    assert sorted(r["event"]["event_id"] for r in records) == [
        "kCAi1KttyQdEKHhdC-nuEA==", "task:00T5e00000KQvF2EAL", "task:00T5e00000KQvF3EAL"]


async def test_a_mailgun_call_that_stored_nothing_can_be_retried_with_the_same_token(
        common_settings: CommonSettings, redis_client) -> None:
    from tests.ingest.helpers import closed_port_address

    down = ingest_settings_for(common_settings, kafka_bootstrap_servers=closed_port_address(),
                               kafka_request_timeout_s=1.0, mailgun_signing_key=SecretStr(MAILGUN_KEY))
    body = mailgun_sign(load_json("mailgun_delivered.json"), MAILGUN_KEY, int(time.time()), "r" * 50)
    body["event-data"]["user-variables"]["customer_id"] = "cust-retry"
    async with running_api(down) as api:
        refused = await api.post("/v1/adapters/mailgun", json=body)
        assert refused.status_code == 503, refused.text
    assert await redis_client.exists(down.keys.webhook_token("mailgun", "r" * 50)) == 0
    async with running_api(ingest_settings_for(common_settings, mailgun_signing_key=SecretStr(MAILGUN_KEY))) as api:
        retried = await api.post("/v1/adapters/mailgun", json=body)
        assert retried.status_code == 200 and retried.json()["accepted"] == 1, retried.text
