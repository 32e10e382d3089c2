"""The adapters' rejected store on one Redis and on a Redis Cluster: kept, listed newest first with a
cursor, filtered by provider, bounded. One stream key: every command stays in its slot."""

from __future__ import annotations

import pytest

from ingest.adapters.rejected import NO_CUSTOMER, RejectedEntry, RejectedStore
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration

NOW_MS = 1_790_000_000_000


def entry(i: int, provider: str = "sendgrid") -> RejectedEntry:
    return RejectedEntry(provider, NO_CUSTOMER, "no customer has this address", f"r{i}@x.io",
                         {"event_id": f"e{i}"}, {"raw": i})


async def test_entries_are_kept_listed_newest_first_and_bounded(redis_target: RedisTarget) -> None:
    store = RejectedStore(redis_target.client, redis_target.keys, max_entries=5, ttl_s=3600)
    await store.add([entry(i) for i in range(4)], NOW_MS)
    await store.add([entry(4, "mailgun"), entry(5), entry(6)], NOW_MS)
    assert await store.count() == 5  # trimmed to max_entries on write
    first, cursor = await store.list(now_ms=NOW_MS, limit=3)
    assert [item["event"]["event_id"] for item in first] == ["e6", "e5", "e4"]
    rest, end = await store.list(now_ms=NOW_MS, limit=3, before=cursor)
    assert [item["event"]["event_id"] for item in rest] == ["e3", "e2"] and end is None
    mailgun, _ = await store.list(now_ms=NOW_MS, limit=10, provider="mailgun")
    assert [(item["provider"], item["recipient"]) for item in mailgun] == [("mailgun", "r4@x.io")]
