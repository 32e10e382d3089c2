"""Profiles in, snapshots out: PUT /v1/customers/{id}/profile and GET /v1/customers/{id}."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from redis.asyncio import Redis

from services.settings import CommonSettings, IngestSettings
from services.stored_values import ValueEncoder
from tests.ingest.helpers import closed_port_address, consume, ingest_settings_for, running_api, value_of

pytestmark = pytest.mark.integration

SNAPSHOT = {  # the shape scorer/core/views.py writes
    "customer_id": "cust-9",
    "status": "throttled",
    "status_since": "2026-11-23T09:00:01.000Z",
    "as_of": "2026-11-23T09:30:00.000Z",
    "profile": {"tier": "A", "stage": "negotiation", "owner_rep_id": "rep-7", "do_not_contact": False},
    "windows": {
        "24h": {
            "touches": {"total": 3, "by_channel": {"email": 2, "sms": 1}, "by_kind": {"promo": 3}},
            "responses": {"total": 0, "by_channel": {}, "by_kind": {}},
        },
        "7d": {
            "touches": {"total": 9, "by_channel": {"email": 6, "sms": 3}, "by_kind": {"promo": 9}},
            "responses": {"total": 1, "by_channel": {"email": 1}, "by_kind": {"reply": 1}},
        },
    },
    "frequency": {"window": "7d", "counted_touches": 9, "throttle_above": 8, "recover_at_or_below": 5},
    "reply_latency": {"last_s": 5400.0, "median_s": 7200.0, "samples": 4},
    "first_seen_at": "2026-10-01T08:00:00.000Z",
    "last_touch_at": "2026-11-23T09:00:00.000Z",
    "last_response_at": "2026-11-20T10:00:00.000Z",
    "next_check_at": "2026-11-24T09:00:00.000Z",
    "last_action": {
        "action_id": "act-1",
        "type": "fatigue.throttle",
        "at": "2026-11-23T09:00:01.000Z",
        "reasons": [{"rule": "frequency_cap", "window": "7d", "observed": 9, "threshold": 8}],
        "suggestion": "Pause promotional touches for 48h.",
    },
    "events_counted": 10,
    "score": 0.93,  # a field a later scorer may add: passed through
}


async def test_profile_lands_on_the_profiles_topic(api: httpx.AsyncClient, settings: IngestSettings) -> None:
    profile = {"tier": "B", "stage": "prospect", "timezone": "Asia/Shanghai", "owner_rep_id": "rep-1"}
    response = await api.put("/v1/customers/cust+1@example.com/profile", json=profile)
    assert response.status_code == 202, response.text
    assert response.json() == {"customer_id": "cust+1@example.com", "accepted": True}

    (record,) = await consume(settings.kafka_bootstrap_servers, settings.profiles_topic, expected=1)
    assert record.key == b"cust+1@example.com"
    value = value_of(record)
    assert value["v"] == 1 and value["customer_id"] == "cust+1@example.com" and value["updated_at"]
    assert value["profile"] == profile | {"do_not_contact": False}
    assert "fatigue_ingest_profiles_total 1.0" in (await api.get("/metrics")).text


async def test_profile_with_broker_down_is_503(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings, kafka_bootstrap_servers=closed_port_address())) as api:
        response = await api.put("/v1/customers/c1/profile", json={"tier": "A"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "broker_unavailable"


async def test_customer_is_404_until_the_scorer_wrote_a_snapshot(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    missing = await api.get("/v1/customers/cust-9")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "not_found",
        "message": "no state for customer 'cust-9' yet: the scorer has not processed any event or profile for it",
    }

    await redis_client.set(settings.keys.snapshot("cust-9"), json.dumps(SNAPSHOT))
    found = await api.get("/v1/customers/cust-9")
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["status"] == "throttled" and body["score"] == 0.93
    assert body["windows"]["7d"]["touches"]["by_channel"] == {"email": 6, "sms": 3}
    assert body["reply_latency"] == {"last_s": 5400.0, "median_s": 7200.0, "samples": 4}
    assert body["last_action"]["reasons"][0]["rule"] == "frequency_cap"
    assert body["profile"]["tier"] == "A"
    assert body["frequency"]["counted_touches"] == 9 and body["events_counted"] == 10
    assert datetime.fromisoformat(body["next_check_at"]) == datetime(2026, 11, 24, 9, tzinfo=UTC)


async def test_a_minimal_snapshot_gets_defaults(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    await redis_client.set(settings.keys.snapshot("new"), json.dumps({"customer_id": "new", "status": "normal"}))
    body = (await api.get("/v1/customers/new")).json()
    assert body["windows"] == {} and body["last_action"] is None and body["reply_latency"]["samples"] == 0


async def test_an_unreadable_snapshot_is_500_not_garbage(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    await redis_client.set(settings.keys.snapshot("bad"), json.dumps({"customer_id": "bad"}))
    response = await api.get("/v1/customers/bad")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "bad_snapshot",
        "message": "the stored state of 'bad' is unreadable: status: is required",
    }


async def test_a_compressed_snapshot_is_served_like_a_json_one(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    """What the scorer writes by default (services/stored_values.py) reads as the same document."""
    await redis_client.set(settings.keys.snapshot("cust-9"), ValueEncoder("zstd").encode(SNAPSHOT))
    await redis_client.set(settings.keys.snapshot("cust-j"), json.dumps({**SNAPSHOT, "customer_id": "cust-j"}))
    zipped, plain = (await api.get("/v1/customers/cust-9")).json(), (await api.get("/v1/customers/cust-j")).json()
    assert zipped == {**plain, "customer_id": "cust-9"} and zipped["status"] == "throttled"
    decision = (await api.get("/v1/customers/cust-9/decision", params={"channel": "email"})).json()
    assert datetime.fromisoformat(decision["snapshot_as_of"]) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["KLUv/QBYAQAAeyJh", "{broken", "KLUv!!!!"])
async def test_a_corrupt_stored_snapshot_is_500_naming_the_customer_for_reads_and_decisions(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis, raw: str
) -> None:
    await redis_client.set(settings.keys.snapshot("bad"), raw)
    for path, params in (("/v1/customers/bad", {}), ("/v1/customers/bad/decision", {"channel": "sms"})):
        response = await api.get(path, params=params)
        assert response.status_code == 500, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "bad_snapshot"
        assert error["message"].startswith("the stored state of 'bad' is unreadable: ")


async def test_customer_with_redis_down_is_503(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, redis_url=f"redis://{closed_port_address()}/0")
    async with running_api(settings) as api:
        response = await api.get("/v1/customers/c1")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "store_unavailable"
