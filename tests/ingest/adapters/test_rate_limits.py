"""Every route that accepts events applies the caller's rate, whatever credential it used, and the
rate counts events (issue 17, finding 3). Over real HTTP, against the session's broker and Redis."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ingest.adapters.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.settings import CommonSettings, IngestSettings
from tests.ingest.adapters.samples import SendGridSigner
from tests.ingest.helpers import API_KEY_NAME, API_SECRET, event, ingest_settings_for, serving_api

pytestmark = pytest.mark.integration

SLOW_SECRET = "slow-ingest-secret-0001"
SLOW = {"Authorization": f"Bearer {SLOW_SECRET}"}
CRM_TOKEN = "crm-url-token-0123456789"


def limited(common: CommonSettings, **overrides: Any) -> IngestSettings:
    """The usual test keys plus `slow`, an ingest key limited to 5/s."""
    keys = f"{API_KEY_NAME}:{API_SECRET}:all,slow:{SLOW_SECRET}:ingest:5/s"
    return ingest_settings_for(common, api_keys=SecretStr(keys), **overrides)


def tasks(first: int, count: int) -> list[dict[str, Any]]:
    return [{"Id": f"00T{i:012d}", "WhoId": "cust-1", "Status": "Completed", "TaskSubtype": "Call",
             "CompletedDateTime": "2026-05-02T14:30:00.000+0000"} for i in range(first, first + count)]


def assert_rate_limited(response: httpx.Response, at_least_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= at_least_s


async def test_concurrent_crm_calls_with_a_bearer_key_share_its_rate(common_settings: CommonSettings) -> None:
    """The finding: 60 concurrent CRM calls with a key limited to 5/s all passed."""
    async with serving_api(limited(common_settings), headers=SLOW) as api:
        started = time.monotonic()
        answers = await asyncio.gather(*(api.post("/v1/adapters/crm/salesforce-task", json=tasks(100 * n, 100))
                                         for n in range(60)))
        elapsed_s = time.monotonic() - started
        statuses = [a.status_code for a in answers]
        metrics = (await api.get("/metrics")).text
    assert set(statuses) == {200, 429}, statuses
    # a burst of 5, plus what 5/s could have refilled meanwhile (the debt of 99 per batch refills nothing)
    assert statuses.count(200) <= 5 + math.ceil(5 * elapsed_s)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 429)
    assert 'fatigue_ingest_adapter_requests_refused_total{provider="crm",reason="rate_limited"}' in metrics


async def test_a_crm_batch_is_charged_per_record_on_the_keys_rate(common_settings: CommonSettings) -> None:
    async with serving_api(limited(common_settings), headers=SLOW) as api:
        first = await api.post("/v1/adapters/crm/salesforce-task", json=tasks(0, 100))
        assert first.status_code == 200 and first.json()["accepted"] == 100, first.text
        # 100 records on 5/s: about 19 s of debt, on the key's one bucket whatever the route
        assert_rate_limited(await api.post("/v1/adapters/crm/salesforce-task", json=tasks(100, 1)), 15)
        assert_rate_limited(await api.post("/v1/events", json=event(event_id="after-crm")), 15)


async def test_a_batch_of_events_counts_each_event_against_the_rate(common_settings: CommonSettings) -> None:
    async with serving_api(limited(common_settings), headers=SLOW) as api:
        batch = await api.post("/v1/events", json=[event(event_id=f"b{i}") for i in range(50)])
        assert batch.status_code == 202, batch.text
        assert_rate_limited(await api.post("/v1/events", json=event(event_id="next")), 5)


async def test_a_provider_credential_has_the_adapter_rate(common_settings: CommonSettings) -> None:
    signer = SendGridSigner()
    settings = limited(common_settings, sendgrid_verification_key=signer.public_key_b64,
                       crm_token=SecretStr(CRM_TOKEN), adapter_rate_limit="2/s")
    events = [{"event": "delivered", "sg_message_id": f"m{i}", "customer_id": "cust-1", "timestamp": int(time.time())}
              for i in range(100)]
    body = json.dumps(events).encode()

    def signed() -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {SIGNATURE_HEADER: signer.sign(timestamp, body), TIMESTAMP_HEADER: timestamp,
                "content-type": "application/json", "Authorization": ""}

    async with serving_api(settings) as api:
        first = await api.post("/v1/adapters/sendgrid", content=body, headers=signed())
        assert first.status_code == 200 and first.json()["accepted"] == 100, first.text
        assert_rate_limited(await api.post("/v1/adapters/sendgrid", content=body, headers=signed()), 30)
        # the CRM URL token is the CRM adapter's credential: its own bucket, the same rate
        by_token = f"/v1/adapters/crm/salesforce-task?token={CRM_TOKEN}"
        assert (await api.post(by_token, json=tasks(0, 10), headers={"Authorization": ""})).status_code == 200
        assert_rate_limited(await api.post(by_token, json=tasks(10, 1), headers={"Authorization": ""}), 2)
        # a bearer key on the same route is charged to the key, not to the adapter
        assert (await api.post("/v1/adapters/crm/salesforce-task", json=tasks(20, 1))).status_code == 200
        metrics = (await api.get("/metrics")).text
    assert 'fatigue_ingest_adapter_requests_refused_total{provider="sendgrid",reason="rate_limited"} 1.0' in metrics
