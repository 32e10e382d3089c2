"""GET /v1/deliveries, GET /v1/deliveries/{id}, POST /v1/deliveries/{id}/retry on a store seeded directly."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.deliveries import DeliveryRecord, DeliveryStore
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
