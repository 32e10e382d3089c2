"""Webhook subscriptions: create with destination checks, list without secrets, delete."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.names import ACTION_TYPES, SECRET_PREFIX
from services.settings import CommonSettings
from services.subscriptions import SubscriptionStore
from tests.ingest.helpers import ingest_settings_for, running_api

pytestmark = pytest.mark.integration


async def test_crud(common_settings: CommonSettings, redis_client: Redis) -> None:
    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True)
    async with running_api(settings) as api:
        created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert created.status_code == 201, created.text
        sub = created.json()
        assert sub["id"].startswith("sub_") and sub["secret"].startswith(SECRET_PREFIX)
        assert sub["events"] == list(ACTION_TYPES) and sub["url"] == "http://127.0.0.1:9/hook"
        assert created.headers["Location"] == f"/v1/subscriptions/{sub['id']}"
        second = await api.post(
            "/v1/subscriptions",
            json={"url": "http://localhost:9/other", "events": ["fatigue.throttle", "fatigue.throttle"]},
        )
        assert second.json()["events"] == ["fatigue.throttle"]

        listed = (await api.get("/v1/subscriptions")).json()
        assert [s["id"] for s in listed] == [sub["id"], second.json()["id"]]
        assert all("secret" not in s for s in listed)
        one = (await api.get(f"/v1/subscriptions/{sub['id']}")).json()
        assert one["url"] == sub["url"] and "secret" not in one

        stored = await SubscriptionStore(redis_client, settings.keys).get(sub["id"])
        assert stored is not None and stored.secret == sub["secret"]  # what the notifier will sign with

        assert (await api.delete(f"/v1/subscriptions/{sub['id']}")).status_code == 204
        gone = await api.delete(f"/v1/subscriptions/{sub['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        assert (await api.get(f"/v1/subscriptions/{sub['id']}")).status_code == 404
        assert [s["id"] for s in (await api.get("/v1/subscriptions")).json()] == [second.json()["id"]]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:9/hook", "loopback address 127.0.0.1; loopback is not allowed"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private/internal address 10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data", "private/internal"),
        ("ftp://example.com/x", "scheme must be http or https"),
        ("https://user:pw@example.com/x", "must not carry credentials"),
        ("not a url", "scheme must be http or https"),
    ],
)
async def test_refused_destinations(
    common_settings: CommonSettings, redis_client: Redis, url: str, fragment: str
) -> None:
    settings = ingest_settings_for(common_settings)
    async with running_api(settings) as api:
        response = await api.post("/v1/subscriptions", json={"url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "destination_refused"
    assert fragment in response.json()["error"]["message"]
    assert await SubscriptionStore(redis_client, settings.keys).list() == []
