"""The same event_id in concurrent requests: stored once, and exactly one answer says accepted."""

from __future__ import annotations

import asyncio

import pytest

from services.settings import CommonSettings
from tests.ingest.helpers import consume, event, ingest_settings_for, running_api, value_of

pytestmark = pytest.mark.integration


async def test_eight_concurrent_posts_of_one_event_count_it_once(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings)
    body = [event(event_id="dup-1", customer_id="cust-dup")]
    async with running_api(settings) as api:
        answers = await asyncio.gather(*(api.post("/v1/events", json=body) for _ in range(8)))
    assert [a.status_code for a in answers] == [202] * 8
    assert sorted(a.json()["accepted"] for a in answers) == [0] * 7 + [1]
    assert sum(a.json()["duplicates"] for a in answers) == 7
    records = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=1, settle_s=1.5)
    assert [value_of(r)["event"]["event_id"] for r in records] == ["dup-1"]
