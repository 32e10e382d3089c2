"""The API's policy cache: read again only when the stored version stamp moved (one round trip per decision).

`in_force_at(stamp)` is given the stamp the decision read together with the snapshot; the
store behind the cache is an in-memory `StoredPolicyReader` that counts what is asked of it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.policy_cache import PolicyCache
from services.errors import StoreUnavailable
from services.policy.model import Policy, default_policy


class CountingSource:
    def __init__(self) -> None:
        self.version: int | None = None
        self.policy: Policy | None = None
        self.stamp_reads = 0
        self.document_reads = 0
        self.down = False

    def store(self, version: int, policy: Policy) -> None:
        self.version, self.policy = version, policy

    async def version_stamp(self) -> str | None:
        self.stamp_reads += 1
        if self.down:
            raise StoreUnavailable("redis is down")
        return None if self.version is None else str(self.version)

    async def current(self, fallback: Policy) -> tuple[int | None, Policy]:
        self.document_reads += 1
        if self.version is None or self.policy is None:
            return None, fallback
        return self.version, self.policy


async def test_an_unchanged_stamp_reads_nothing() -> None:
    source = CountingSource()
    cache = PolicyCache(source)  # type: ignore[arg-type]
    assert await cache.in_force_at(None) == (None, default_policy())
    reads = (source.stamp_reads, source.document_reads)
    for _ in range(5):
        assert (await cache.in_force_at(None))[0] is None
    assert (source.stamp_reads, source.document_reads) == reads


async def test_a_moved_stamp_loads_the_stored_policy() -> None:
    source = CountingSource()
    cache = PolicyCache(source)  # type: ignore[arg-type]
    await cache.in_force_at(None)
    stricter = replace(default_policy(), throttle_above=3)
    source.store(3, stricter)
    version, policy = await cache.in_force_at("3")  # another API process stored version 3
    assert version == 3 and policy is stricter
    documents = source.document_reads
    assert await cache.in_force_at("3") == (3, stricter)
    assert source.document_reads == documents
    source.version, source.policy = None, None  # removed: the counter moved on (stamp "4"), the default is back
    assert await cache.in_force_at("4") == (None, default_policy())


async def test_a_store_outage_propagates_and_is_tried_again() -> None:
    source = CountingSource()
    cache = PolicyCache(source)  # type: ignore[arg-type]
    source.down = True
    with pytest.raises(StoreUnavailable):
        await cache.in_force_at("1")
    source.down = False
    source.store(1, default_policy())
    assert (await cache.in_force_at("1"))[0] == 1
