"""GET /v1/deliveries, GET /v1/deliveries/{id}, POST /v1/deliveries/{id}/retry on a store seeded directly."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.delivery.store import DeliveryRecord, DeliveryStore
from services.settings import CommonSettings
from tests.ingest.helpers import ingest_settings_for, running_api
from tests.notifier.helpers import make_action

pytestmark = pytest.mark.integration


async def seed(store: DeliveryStore) -> tuple[DeliveryRecord, DeliveryRecord]:
    failed = DeliveryRecord.new("msg_failed", make_action(customer_id="cust-9"), "sub_a", store.now_ms())
    pending = DeliveryRecord.new("msg_pending", make_action(), "sub_b", store.now_ms() + 60_000)
    await store.schedule([failed, pending])
    await store.mark_failed("msg_failed", attempts=7, last_status=503, last_error="destination answered HTTP 503")
    return failed, pending


async def test_list_read_and_retry_a_dead_letter(common_settings: CommonSettings, redis_client: Redis) -> None:
    settings = ingest_settings_for(common_settings)
    store = DeliveryStore(redis_client, settings.keys)
    failed, _ = await seed(store)
    async with running_api(settings) as api:
        listed = await api.get("/v1/deliveries", params={"status": "failed"})
        assert listed.status_code == 200, listed.text
        [item] = listed.json()
        assert item["id"] == "msg_failed" and item["status"] == "failed"
        assert (item["subscription_id"], item["action_type"], item["customer_id"]) == (
            "sub_a", failed.action["type"], "cust-9")
        assert (item["attempts"], item["last_status"]) == (7, 503)
        assert item["last_error"] == "destination answered HTTP 503" and item["next_attempt_at"] is None
        assert "secret" not in listed.text
        assert (await api.get("/v1/deliveries")).json() == listed.json()  # failed is the default
        assert [d["id"] for d in (await api.get("/v1/deliveries?status=pending")).json()] == ["msg_pending"]
        assert (await api.get("/v1/deliveries?status=failed&offset=1")).json() == []
        assert (await api.get("/v1/deliveries?status=lost")).status_code == 422

        assert (await api.get("/v1/deliveries/msg_failed")).json() == item
        retried = await api.post("/v1/deliveries/msg_failed/retry")
        assert retried.status_code == 202, retried.text
        assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
        assert retried.json()["next_attempt_at"] is not None
        assert (await api.get("/v1/deliveries?status=failed")).json() == []
        again = await api.post("/v1/deliveries/msg_failed/retry")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    [due] = await store.claim_due(store.now_ms(), lease_ms=1000, limit=10)
    assert due.id == "msg_failed"


async def test_unknown_delivery_is_404(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings)) as api:
        for response in (await api.get("/v1/deliveries/msg_nope"), await api.post("/v1/deliveries/msg_nope/retry")):
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_list_dead_letters_of_one_subscription(common_settings: CommonSettings, redis_client: Redis) -> None:
    settings = ingest_settings_for(common_settings)
    store = DeliveryStore(redis_client, settings.keys)
    records = [DeliveryRecord.new(f"msg_{sub}_{i}", make_action(), sub, store.now_ms())
               for sub in ("sub_a", "sub_b") for i in range(2)]
    await store.schedule(records)
    for rec in records:
        await store.mark_failed(rec.id, attempts=1, last_status=400, last_error="destination answered HTTP 400")
    async with running_api(settings) as api:
        listed = await api.get("/v1/deliveries", params={"status": "failed", "subscription_id": "sub_b"})
        assert listed.status_code == 200, listed.text
        assert sorted(d["id"] for d in listed.json()) == ["msg_sub_b_0", "msg_sub_b_1"]
        assert {d["subscription_id"] for d in listed.json()} == {"sub_b"}
        assert len((await api.get("/v1/deliveries?subscription_id=sub_a&limit=1")).json()) == 1  # failed: default
        assert (await api.get("/v1/deliveries?subscription_id=sub_none")).json() == []
        assert len((await api.get("/v1/deliveries?status=failed")).json()) == 4

        await store.replay_failed("sub_b")
        assert (await api.get("/v1/deliveries?subscription_id=sub_b")).json() == []
        assert len((await api.get("/v1/deliveries?subscription_id=sub_a")).json()) == 2

        for query in ("status=pending&subscription_id=sub_a", "status=delivered&subscription_id=sub_a",
                      "status=digested&subscription_id=sub_a", "status=lost", "subscription_id="):
            refused = await api.get(f"/v1/deliveries?{query}")
            assert refused.status_code == 422, query
            error = refused.json()["error"]
            assert error["code"] == "invalid_request" and error["message"], query
        combination = (await api.get("/v1/deliveries?status=pending&subscription_id=sub_a")).json()["error"]
        assert "subscription_id" in combination["message"] and "failed" in combination["message"]


async def test_digested_deliveries_are_listed_with_their_digest(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    settings = ingest_settings_for(common_settings)
    store = DeliveryStore(redis_client, settings.keys)
    _, pending = await seed(store)
    await store.mark_digested(pending.id, digest_id="msg_digest_1")
    async with running_api(settings) as api:
        listed = await api.get("/v1/deliveries", params={"status": "digested"})
        assert listed.status_code == 200, listed.text
        [item] = listed.json()
        assert (item["id"], item["status"], item["digest_id"]) == ("msg_pending", "digested", "msg_digest_1")
        assert item["next_attempt_at"] is None
        assert (await api.get("/v1/deliveries/msg_pending")).json() == item
        assert (await api.get("/v1/deliveries?status=pending")).json() == []
        assert (await api.get("/v1/deliveries/msg_failed")).json()["digest_id"] is None
        retried = await api.post("/v1/deliveries/msg_pending/retry")
        assert retried.status_code == 409 and "digested" in retried.json()["error"]["message"]
