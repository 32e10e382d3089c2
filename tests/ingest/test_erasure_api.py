"""DELETE /v1/customers/{id}: state and snapshot gone, a tombstone on the profiles topic, the adapters'
rejected entries of the customer's addresses gone, the rest named in `remains`."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from redis.asyncio import Redis

from ingest.adapters.rejected import names_customer
from ingest.identity import EMAIL, PHONE, Identity
from ingest.routers.customers import ERASED_KINDS
from scorer.decoding import Record
from services.settings import CommonSettings, IngestSettings
from tests.ingest.adapters.samples import load_json
from tests.ingest.helpers import consume, ingest_settings_for, running_api
from tests.scorer_feed import ScorerFeed


@pytest.mark.integration
async def test_erasure_deletes_state_view_and_list_places_and_writes_a_tombstone(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    feed = ScorerFeed(redis_client, settings.keys, settings.partitions, datetime.now(UTC))
    await feed.process([*over_contacted_records(feed, "cust-9"), feed.event("cust-10", 1)])
    assert (await api.get("/v1/customers/cust-9")).json()["status"] == "throttled"
    response = await api.delete("/v1/customers/cust-9")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["erased"] == {"state": True, "snapshot": True, "lists": True, "rejected": False,
                              "identities": False, "profile": True}
    assert tuple(body["erased"]) == ERASED_KINDS
    assert any("events topic" in remains for remains in body["remains"])
    nine, ten = (settings.keys.partition(feed.partition(c)) for c in ("cust-9", "cust-10"))
    for key in (nine.states(), nine.views(), nine.customer_list_entries()):
        assert await redis_client.hget(key, "cust-9") is None, key
    assert await redis_client.zscore(nine.due(), "cust-9") is None
    listed = (await api.get("/v1/customers", params={"list": "throttled"})).json()["items"]
    assert "cust-9" not in [item["customer_id"] for item in listed]
    assert await redis_client.hget(ten.states(), "cust-10") is not None
    assert (await api.get("/v1/customers/cust-10")).status_code == 200
    [record] = await consume(settings.kafka_bootstrap_servers, settings.profiles_topic, expected=1)
    assert (record.key, record.value) == (b"cust-9", None)
    again = await api.delete("/v1/customers/cust-9")  # idempotent
    assert again.status_code == 200 and again.json()["erased"]["state"] is False
    assert (await api.get("/v1/customers/cust-9")).status_code == 404


def over_contacted_records(feed: ScorerFeed, customer_id: str) -> list[Record]:
    return [feed.event(customer_id, 6 - i * 0.4) for i in range(14)]


def sendgrid_open(email: str, event_id: str) -> dict:
    return dict(load_json("sendgrid_events.json")[3], email=email, sg_event_id=event_id)


@pytest.mark.integration
async def test_erasure_deletes_the_rejected_entries_of_the_customers_addresses_and_no_other(
    api: httpx.AsyncClient, redis_client: Redis, settings: IngestSettings
) -> None:
    """Issue 17, finding 9: an unmapped provider event kept an address the profile lists later."""
    events = [sendgrid_open("Victim.Second@Example.com", "sg-1"), sendgrid_open("someone.else@example.com", "sg-2")]
    sent = await api.post("/v1/adapters/sendgrid", json=events)
    assert sent.status_code == 200 and sent.json()["unmapped"] == 2, sent.text
    profile = {"emails": ["victim@example.com", "victim.second@example.com"], "phones": ["+15558675309"]}
    put = await api.put("/v1/customers/victim-1/profile", json=profile)
    assert put.status_code == 202, put.text

    body = (await api.delete("/v1/customers/victim-1")).json()
    assert body["erased"]["rejected"] is True and body["erased"]["identities"] is True
    left = (await api.get("/v1/adapters/rejected")).json()["items"]
    assert [entry["recipient"] for entry in left] == ["someone.else@example.com"]
    stream = await redis_client.xrange(settings.keys.adapter_rejected())
    assert "victim" not in repr(stream).lower()
    assert any("rejected store" in remains and "not list" in remains for remains in body["remains"])
    again = (await api.delete("/v1/customers/victim-1")).json()
    assert again["erased"]["rejected"] is False
    assert len(await redis_client.xrange(settings.keys.adapter_rejected())) == 1


@pytest.mark.integration
async def test_remains_names_the_subscriptions_whose_filters_name_the_customer(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings, allow_loopback_destinations=True)) as api:
        await remains_names_the_subscription(api)


async def remains_names_the_subscription(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook",
                                                        "filters": {"customer_ids": ["victim-2"]}})
    assert created.status_code == 201, created.text
    remains = (await api.delete("/v1/customers/victim-2")).json()["remains"]
    assert any(created.json()["id"] in line and "PATCH" in line for line in remains)
    assert not any("subscriptions" in line for line in (await api.delete("/v1/customers/victim-3")).json()["remains"])


MEMBERS = {"email:d-victim", "phone:d-phone"}


def member_of(identity: Identity) -> str:
    """A stand-in for the keyed digest: enough to tell the customer's identities from others."""
    return {Identity(EMAIL, "victim@example.com"): "email:d-victim",
            Identity(PHONE, "+15558675309"): "phone:d-phone"}.get(identity, f"{identity.kind}:other")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"recipient": "victim@example.com", "event": "{}"}, True),
        ({"recipient": "+15558675309", "event": "{}"}, True),
        ({"recipient": "other@example.com", "event": "{}"}, False),
        ({"recipient": "", "event": '{"customer_id": "victim-1", "kind": "open"}'}, True),  # invalid, but resolved
        ({"recipient": "other@example.com", "event": '{"customer_id": "victim-10"}'}, False),
        ({"recipient": "", "event": "not json"}, False),
        ({}, False),
    ],
)
def test_a_rejected_entry_names_the_customer_by_an_address_of_its_profile_or_its_id(
    fields: dict[str, str], named: bool
) -> None:
    assert names_customer(fields, "victim-1", MEMBERS, member_of) is named
