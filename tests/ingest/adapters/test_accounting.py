"""Every record an adapter receives is answered for (issue 17, finding 2): accepted, duplicate, or not
stored with its index and reason — or the whole request is a 413 naming the limit, with nothing
ingested. Over real HTTP, against the session's broker and Redis; what is stored is read back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from ingest.adapters.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.settings import CommonSettings
from tests.ingest.adapters.samples import SendGridSigner
from tests.ingest.helpers import consume, ingest_settings_for, serving_api, value_of

pytestmark = pytest.mark.integration


def task(number: int, **overrides: Any) -> dict[str, Any]:
    """A completed Salesforce call task of customer cust-<number % 7>."""
    record = {"Id": f"00T{number:012d}", "WhoId": f"cust-{number % 7}", "Status": "Completed", "TaskSubtype": "Call",
              "CompletedDateTime": "2026-05-02T14:30:00.000+0000", "OwnerId": "rep-1"}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


async def stored_ids(settings: CommonSettings, expected: int) -> list[str]:
    records = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=expected,
                            timeout_s=15, settle_s=1.0)
    return sorted(value_of(r)["event"]["event_id"] for r in records)


async def test_a_crm_request_over_the_record_limit_is_413_and_ingests_nothing(
        common_settings: CommonSettings) -> None:
    """The finding: 3,000 records answered 200 {"accepted": 1000}, the other 2,000 neither counted nor reported."""
    settings = ingest_settings_for(common_settings)  # FATIGUE_MAX_EVENTS_PER_REQUEST: 1,000
    body = {"totalSize": 3000, "done": True, "records": [task(i) for i in range(3000)]}
    async with serving_api(settings) as api:
        response = await api.post("/v1/adapters/crm/salesforce-task", json=body)
        metrics = (await api.get("/metrics")).text
    assert response.status_code == 413, response.text
    answer = response.json()
    assert answer["error"]["code"] == "too_many_events"
    assert "3000 records in one request; at most 1000 allowed (FATIGUE_MAX_EVENTS_PER_REQUEST)" in \
        answer["error"]["message"]
    assert (answer["received"], answer["limit"]) == (3000, 1000)
    assert 'fatigue_ingest_adapter_requests_refused_total{provider="crm",reason="too_many_records"} 1.0' in metrics
    assert await stored_ids(common_settings, expected=0) == []


async def test_a_crm_request_at_the_limit_is_stored_whole(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, max_events_per_request=40)
    async with serving_api(settings) as api:
        over = await api.post("/v1/adapters/crm/salesforce-task", json=[task(i) for i in range(41)])
        assert over.status_code == 413, over.text
        response = await api.post("/v1/adapters/crm/salesforce-task", json=[task(i) for i in range(40)])
    assert response.status_code == 200, response.text
    assert response.json()["received"] == response.json()["accepted"] == 40
    assert await stored_ids(common_settings, expected=40) == sorted(f"task:00T{i:012d}" for i in range(40))


async def test_every_record_of_a_crm_request_is_answered_with_its_index(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, identity_hash_key=SecretStr("h" * 32))
    next_week = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    records = [
        task(1),                                                 # 0 accepted
        task(1, Subject="the same task again"),                  # 1 duplicate (same Id)
        task(2, WhoId=None, Who={"Email": "nobody@x.example"}),  # 2 unmapped: no profile has the address
        task(3, CompletedDateTime=next_week),                    # 3 invalid: in the future
        task(4, Status="Not Started"),                           # 4 ignored by the mapping's `when`
        "not a record",                                          # 5 ignored: not an object
        task(6),                                                 # 6 accepted
    ]
    async with serving_api(settings) as api:
        response = await api.post("/v1/adapters/crm/salesforce-task", json={"records": records})
    assert response.status_code == 200, response.text
    answer = response.json()
    counts = {name: answer[name] for name in ("received", "accepted", "duplicates", "unmapped", "invalid", "ignored")}
    assert counts == {"received": 7, "accepted": 2, "duplicates": 1, "unmapped": 1, "invalid": 1, "ignored": 2}
    assert sum(counts.values()) == 2 * counts["received"]  # every record counted once, under one outcome
    assert [(item["index"], item["outcome"]) for item in answer["rejected"]] == [
        (2, "unmapped"), (3, "invalid"), (4, "ignored"), (5, "ignored")]
    reasons = [item["reason"] for item in answer["rejected"]]
    assert reasons[0] == "no customer profile has this email"
    assert reasons[1].startswith("occurred_at:") and "in the future" in reasons[1]
    assert reasons[2:] == ["Status is 'Not Started'", "not a record object"]
    assert await stored_ids(common_settings, expected=2) == ["task:00T000000000001", "task:00T000000000006"]


async def test_a_sendgrid_batch_over_the_adapter_limit_is_413_and_ingests_nothing(
        common_settings: CommonSettings) -> None:
    signer = SendGridSigner()
    settings = ingest_settings_for(common_settings, sendgrid_verification_key=signer.public_key_b64,
                                   adapter_max_records=20)
    events = [{"event": "delivered", "sg_message_id": f"m{i}", "customer_id": "cust-1", "email": "a@x.example",
               "timestamp": int(time.time()) - 60} for i in range(21)]
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    headers = {SIGNATURE_HEADER: signer.sign(timestamp, body), TIMESTAMP_HEADER: timestamp,
               "content-type": "application/json"}
    async with serving_api(settings) as api:
        response = await api.post("/v1/adapters/sendgrid", content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert "21 records in one request; at most 20 allowed (FATIGUE_ADAPTER_MAX_RECORDS)" in \
        response.json()["error"]["message"]
    assert await stored_ids(common_settings, expected=0) == []
