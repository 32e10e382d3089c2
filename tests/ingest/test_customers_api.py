"""Profiles in, snapshots out: PUT /v1/customers/{id}/profile and GET /v1/customers/{id} (computed at
read time from the state the real scorer stored)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from scorer.state_values import state_of_value
from services.partitions import partition_of
from services.settings import CommonSettings, IngestSettings
from tests.ingest.helpers import closed_port_address, consume, ingest_settings_for, running_api, value_of
from tests.scorer_feed import ScorerFeed

pytestmark = pytest.mark.integration


class Feed(ScorerFeed):
    """The real scorer's edge at the real time now, on the test's Redis prefix."""

    def __init__(self, redis: Redis, settings: IngestSettings) -> None:
        super().__init__(redis, settings.keys, settings.partitions, datetime.now(UTC))


async def corrupt_state(redis: Redis, settings: IngestSettings, customer_id: str, raw: str | bytes) -> None:
    """Store `raw` where the scorer keeps the customer's state and decision view."""
    keys = settings.keys.partition(partition_of(customer_id, settings.partitions))
    await redis.hset(keys.states(), customer_id, raw)
    await redis.hset(keys.views(), customer_id, raw)


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


async def test_customer_is_404_until_the_scorer_stored_a_state(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    missing = await api.get("/v1/customers/cust-9")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "not_found",
        "message": "no state for customer 'cust-9' yet: the scorer has not processed any event or profile for it",
    }

    feed = Feed(redis_client, settings)
    records = [feed.profile("cust-9", tier="A", stage="negotiation", owner_rep_id="rep-7")]
    records += [feed.event("cust-9", 6 - i * 0.4, channel="email" if i % 3 else "sms", kind="promo") for i in range(14)]
    records.append(feed.event("cust-9", 3.05, "response", "reply", channel="email"))
    await feed.process(records)

    found = await api.get("/v1/customers/cust-9")
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["status"] == "throttled" and body["profile"]["tier"] == "A", body
    assert body["frequency"]["counted_touches"] == 14 and body["events_counted"] == 15
    assert body["windows"]["7d"]["touches"]["by_channel"] == {"email": 9, "sms": 5}
    assert body["windows"]["7d"]["responses"]["by_kind"] == {"reply": 1}
    assert body["reply_latency"]["samples"] == 1
    assert body["last_action"]["type"] == "fatigue.throttle"
    assert "frequency_cap" in [r["rule"] for r in body["last_action"]["reasons"]]
    # computed as of the request: the snapshot is no older than the request
    assert datetime.fromisoformat(body["as_of"]) >= feed.now - timedelta(seconds=1)


async def test_a_profile_only_customer_reads_with_defaults(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    feed = Feed(redis_client, settings)
    await feed.process([feed.profile("new", tier="B")])
    body = (await api.get("/v1/customers/new")).json()
    assert body["status"] == "normal" and body["last_action"] is None and body["reply_latency"]["samples"] == 0
    assert body["events_counted"] == 0 and body["profile"]["tier"] == "B"


async def test_a_compressed_state_is_served_like_a_json_one(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    """The scorer stores compressed MessagePack states by default (scorer/core/state_codec.py); a state
    stored as plain JSON (an older build, FATIGUE_STORE_FORMAT=json) reads as the same document."""
    feed = Feed(redis_client, settings)
    await feed.process([feed.event("cust-z", 1), feed.event("cust-z", 0.5, "response", "reply")])
    keys = settings.keys.partition(feed.partition("cust-z"))
    stored = await redis_client.hget(keys.states(), "cust-z")
    assert stored is not None
    zipped = (await api.get("/v1/customers/cust-z")).json()
    await redis_client.hset(keys.states(), "cust-z", json.dumps(state_of_value(stored).to_json()))
    plain = (await api.get("/v1/customers/cust-z")).json()
    assert {**zipped, "as_of": None} == {**plain, "as_of": None} and zipped["events_counted"] == 2


async def test_an_unreadable_state_is_500_not_garbage(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    await corrupt_state(redis_client, settings, "bad", json.dumps({"customer_id": "bad"}))
    response = await api.get("/v1/customers/bad")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "bad_snapshot"
    assert error["message"].startswith("the stored state of 'bad' is unreadable: ")


@pytest.mark.parametrize("raw", ["KLUv/QBYAQAAeyJh", "{broken", "KLUv!!!!", "[1, 2]"])
async def test_a_corrupt_stored_state_is_500_naming_the_customer_for_reads_and_decisions(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis, raw: str
) -> None:
    await corrupt_state(redis_client, settings, "bad", raw)
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
