"""POST /v1/events against the real broker and Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.contract import EventEnvelope
from services.settings import CommonSettings, IngestSettings
from tests.ingest.helpers import (
    API_KEY_NAME,
    OTHER_SECRET,
    closed_port_address,
    consume,
    event,
    ingest_settings_for,
    running_api,
    value_of,
)

pytestmark = pytest.mark.integration


async def published(settings: IngestSettings, expected: int) -> list[dict[str, Any]]:
    records = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=expected)
    for record in records:
        assert record.key == value_of(record)["event"]["customer_id"].encode()
        EventEnvelope.model_validate_json(record.value)  # what the scorer decodes
    return [value_of(record) for record in records]


async def test_mixed_batch_stores_valid_items_and_explains_the_rest(
    api: httpx.AsyncClient, settings: IngestSettings
) -> None:
    batch = [
        event(event_id="a", customer_id="cust-1"),
        event(event_id="b", channel="fax"),
        event(event_id="c", customer_id="cust-2", type="response", kind="reply", in_reply_to="a"),
        event(event_id="d", occurred_at="2099-01-01T00:00:00Z"),
        event(event_id="e", customer_id="cust-1", channel="sms", kind=None),
        "not an event",
    ]
    response = await api.post("/v1/events", json=batch)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (3, 0)
    assert [(r["index"], r["error"].split(":")[0]) for r in body["rejected"]] == [
        (1, "channel"),
        (3, "occurred_at"),
        (5, "event must be a JSON object, not string"),
    ]
    assert "in the future" in body["rejected"][1]["error"]

    values = await published(settings, expected=3)
    assert sorted(v["event"]["event_id"] for v in values) == ["a", "c", "e"]
    for value in values:
        assert value["v"] == 1 and value["producer"] == API_KEY_NAME and value["received_at"]
    reply = next(v["event"] for v in values if v["event"]["event_id"] == "c")
    sent = batch[2]
    assert isinstance(sent, dict)
    assert {k: reply[k] for k in sent if k != "occurred_at"} == {k: v for k, v in sent.items() if k != "occurred_at"}
    assert datetime.fromisoformat(reply["occurred_at"]) == datetime.fromisoformat(sent["occurred_at"])


async def test_a_single_object_body_is_one_event(api: httpx.AsyncClient, settings: IngestSettings) -> None:
    response = await api.post("/v1/events", json=event(event_id="solo"))
    assert response.status_code == 202 and response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert [v["event"]["event_id"] for v in await published(settings, expected=1)] == ["solo"]


async def test_duplicates_are_acknowledged_but_not_published_again(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    first = await api.post("/v1/events", json=[event(event_id="x1"), event(event_id="x2"), event(event_id="x1")])
    assert first.json() == {"accepted": 2, "duplicates": 1, "rejected": []}
    again = await api.post("/v1/events", json=[event(event_id="x2"), event(event_id="x3")])
    assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    only_dups = await api.post("/v1/events", json=[event(event_id="x1")])
    assert only_dups.status_code == 202 and only_dups.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

    assert sorted(v["event"]["event_id"] for v in await published(settings, expected=3)) == ["x1", "x2", "x3"]
    ttl = await redis_client.ttl(settings.keys.dedup(API_KEY_NAME, "x1"))
    assert 0 < ttl <= settings.dedup_ttl_s
    metrics = (await api.get("/metrics")).text
    assert 'fatigue_ingest_events_total{outcome="accepted"} 3.0' in metrics
    assert 'fatigue_ingest_events_total{outcome="duplicate"} 3.0' in metrics
    assert "fatigue_ingest_publish_seconds_count 2.0" in metrics  # the all-duplicates request published nothing


async def test_event_ids_are_de_duplicated_per_api_key(api: httpx.AsyncClient, settings: IngestSettings) -> None:
    await api.post("/v1/events", json=event(event_id="shared"))
    other = await api.post(
        "/v1/events", json=event(event_id="shared"), headers={"Authorization": f"Bearer {OTHER_SECRET}"}
    )
    assert other.json()["accepted"] == 1
    assert sorted(v["producer"] for v in await published(settings, expected=2)) == ["crm", "erp"]


async def test_broker_down_is_503_and_nothing_is_marked_seen(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    down = ingest_settings_for(common_settings, kafka_bootstrap_servers=closed_port_address())
    async with running_api(down) as api:
        response = await api.post("/v1/events", json=[event(event_id="lost-1"), event(event_id="lost-2")])
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert "nothing was stored" in response.json()["error"]["message"]
        metrics = (await api.get("/metrics")).text
    assert 'fatigue_ingest_requests_refused_total{reason="broker_unavailable"} 1.0' in metrics
    # nothing but the partition count the API checks at start (services/partitions.py)
    assert await redis_client.keys(f"{down.redis_prefix}*") == [down.keys.meta()]

    async with running_api(ingest_settings_for(common_settings)) as api:  # the retry once Kafka is back
        retry = await api.post("/v1/events", json=[event(event_id="lost-1"), event(event_id="lost-2")])
    assert retry.json() == {"accepted": 2, "duplicates": 0, "rejected": []}


async def test_redis_down_skips_de_duplication_but_still_accepts(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, redis_url=f"redis://{closed_port_address()}/0")
    async with running_api(settings) as api:
        for _ in range(2):
            response = await api.post("/v1/events", json=event(event_id="same"))
            assert response.status_code == 202 and response.json()["accepted"] == 1
    assert len(await published(settings, expected=2)) == 2  # the scorer de-duplicates by event_id


async def test_an_event_too_large_for_the_event_log_is_rejected_by_index_and_never_retried(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    """Issue 17 (errors classified once): an event the event log refuses for its own size is a rejected
    item naming its index and the limit, never a 503 to retry forever; the others are stored. The
    limit is set here on the API's producer (FATIGUE_KAFKA_MAX_REQUEST_BYTES = 2048: aiokafka's
    `max_request_size`, checked before sending): the embedded broker enforces no max.message.bytes."""
    settings = ingest_settings_for(common_settings, kafka_max_request_bytes=2048)
    large = event(event_id="big", attributes={"notes": "n" * 4000})
    batch = [event(event_id="a"), large, event(event_id="b")]
    async with running_api(settings) as api:
        mixed = await api.post("/v1/events", json=batch)
        alone = await api.post("/v1/events", json=large)
        again = await api.post("/v1/events", json=batch)
        metrics = (await api.get("/metrics")).text
    assert mixed.status_code == 202, mixed.text
    assert (mixed.json()["accepted"], [r["index"] for r in mixed.json()["rejected"]]) == (2, [1])
    assert "the limit is 2,048 bytes" in mixed.json()["rejected"][0]["error"]
    assert alone.status_code == 422, alone.text
    assert alone.json()["error"]["code"] == "all_events_rejected" and alone.json()["rejected"][0]["index"] == 0
    # the stored ones were marked, the refused one was not: a retry stores nothing twice and refuses it again
    assert (again.status_code, again.json()["accepted"], again.json()["duplicates"]) == (202, 0, 2)
    assert [r["index"] for r in again.json()["rejected"]] == [1]
    assert sorted(v["event"]["event_id"] for v in await published(settings, expected=2)) == ["a", "b"]
    assert 'fatigue_records_refused_total{reason="too_large",stage="api.publish"} 3.0' in metrics
    assert 'fatigue_ingest_requests_refused_total{reason="broker_unavailable"} 0.0' in metrics
    assert await redis_client.exists(settings.keys.dedup(API_KEY_NAME, "big")) == 0
