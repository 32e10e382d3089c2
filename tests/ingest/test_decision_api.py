"""GET /v1/customers/{id}/decision on a real Redis, with the states and views the real scorer wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from services.settings import CommonSettings, IngestSettings
from tests.ingest.helpers import ingest_settings_for, running_api
from tests.scorer_feed import ScorerFeed

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(common_settings: CommonSettings) -> AsyncIterator[tuple[httpx.AsyncClient, IngestSettings]]:
    settings = ingest_settings_for(common_settings)
    async with running_api(settings) as client:
        yield client, settings


async def store_snapshot(redis: Redis, settings: IngestSettings, customer: str, hours_ago: float) -> None:
    """A customer whose only email touch was `hours_ago`, answered by an open an hour later, as the
    real scorer stores it (its state and decision view)."""
    feed = ScorerFeed(redis, settings.keys, settings.partitions, datetime.now(UTC))
    await feed.process([feed.event(customer, hours_ago / 24, channel="email", kind="value"),
                        feed.event(customer, (hours_ago - 1) / 24, "response", "open", channel="email")])


async def test_decisions_follow_gap_and_quiet_period_and_the_policy_in_force(
    api: tuple[httpx.AsyncClient, IngestSettings], redis_client: Redis
) -> None:
    client, settings = api
    await store_snapshot(redis_client, settings, "dec-1", hours_ago=5)

    email = (await client.get("/v1/customers/dec-1/decision", params={"channel": "email", "kind": "promo"})).json()
    assert email["decision"] == "defer" and [r["rule"] for r in email["reasons"]] == ["min_gap"]
    assert email["policy_version"] is None and email["next_allowed_at"] is not None
    sms = (await client.get("/v1/customers/dec-1/decision", params={"channel": "sms"})).json()
    assert sms["decision"] == "defer" and sms["reasons"][0]["rule"] == "quiet_period"  # opened an email
    phone = (await client.get("/v1/customers/dec-1/decision", params={"channel": "phone"})).json()
    assert phone["decision"] == "allow"
    receipt = await client.get("/v1/customers/dec-1/decision", params={"channel": "email", "kind": "transactional"})
    assert receipt.json()["decision"] == "allow"

    relaxed = "sending:\n  min_gap_by_channel: {email: 2h}\n  quiet_periods: []\n"
    put = await client.put("/v1/policy", content=relaxed, headers={"content-type": "application/yaml"})
    assert put.status_code == 200, put.text
    email = (await client.get("/v1/customers/dec-1/decision", params={"channel": "email"})).json()
    sms = (await client.get("/v1/customers/dec-1/decision", params={"channel": "sms"})).json()
    assert (email["decision"], sms["decision"]) == ("allow", "allow")
    assert email["policy_version"] == put.json()["version"]


def decisions_counted(metrics_text: str) -> dict[tuple[str, str], float]:
    return {(sample.labels["outcome"], sample.labels["rule"]): sample.value
            for family in text_string_to_metric_families(metrics_text) for sample in family.samples
            if sample.name == "fatigue_api_decisions_total"}


async def test_decisions_are_counted_by_outcome_and_the_rule_that_decided(
    api: tuple[httpx.AsyncClient, IngestSettings], redis_client: Redis
) -> None:
    """What vendors show as skipped / aborted sends (issue 17: suppression visible)."""
    client, settings = api
    await store_snapshot(redis_client, settings, "dec-2", hours_ago=5)
    for channel, kind in (("email", "promo"), ("email", None), ("sms", None), ("phone", None),
                          ("email", "transactional")):
        params = {"channel": channel, **({"kind": kind} if kind else {})}
        assert (await client.get("/v1/customers/dec-2/decision", params=params)).status_code == 200
    assert (await client.get("/v1/customers/nobody/decision", params={"channel": "email"})).status_code == 200
    counted = decisions_counted((await client.get("/metrics")).text)
    assert {labels: n for labels, n in counted.items() if n} == {
        ("defer", "min_gap"): 2, ("defer", "quiet_period"): 1, ("allow", "none"): 1, ("allow", "transactional"): 1,
        ("allow", "no_history"): 1,
    }
    assert ("deny", "do_not_contact") in counted, "every rule's series exists from the start (at zero)"
    assert {outcome for outcome, _ in counted} == {"allow", "defer", "deny"} and len(counted) == 13


async def test_unknown_customer_and_bad_channel(api: tuple[httpx.AsyncClient, IngestSettings]) -> None:
    client, _ = api
    unknown = await client.get("/v1/customers/nobody/decision", params={"channel": "email"})
    assert unknown.status_code == 200 and unknown.json()["decision"] == "allow"
    bad = await client.get("/v1/customers/nobody/decision", params={"channel": "fax"})
    assert bad.status_code == 422 and "channel" in bad.json()["error"]["message"]


async def test_decision_without_redis_is_a_503(common_settings: CommonSettings) -> None:
    from tests.ingest.helpers import closed_port_address

    settings = ingest_settings_for(common_settings).model_copy(update={"redis_url": f"redis://{closed_port_address()}/0"})
    async with running_api(settings) as client:
        response = await client.get("/v1/customers/c/decision", params={"channel": "email"})
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "store_unavailable"
