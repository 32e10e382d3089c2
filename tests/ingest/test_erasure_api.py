"""DELETE /v1/customers/{id}: state and snapshot gone, a tombstone on the profiles topic, the rest named."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from services.settings import IngestSettings
from tests.ingest.helpers import consume

pytestmark = pytest.mark.integration


async def test_erasure_deletes_state_and_snapshot_and_writes_a_tombstone(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    await redis_client.set(settings.keys.state("cust-9"), "{}")
    await redis_client.set(settings.keys.snapshot("cust-9"), "{}")
    await redis_client.set(settings.keys.snapshot("cust-10"), "{}")
    response = await api.delete("/v1/customers/cust-9")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["erased"] == {"state": True, "snapshot": True, "lists": False, "profile": True, "identities": False}
    assert any("events topic" in remains for remains in body["remains"])
    assert await redis_client.get(settings.keys.state("cust-9")) is None
    assert await redis_client.get(settings.keys.snapshot("cust-10")) == "{}"
    [record] = await consume(settings.kafka_bootstrap_servers, settings.profiles_topic, expected=1)
    assert (record.key, record.value) == (b"cust-9", None)
    again = await api.delete("/v1/customers/cust-9")  # idempotent
    assert again.status_code == 200 and again.json()["erased"]["state"] is False
    assert (await api.get("/v1/customers/cust-9")).status_code == 404
