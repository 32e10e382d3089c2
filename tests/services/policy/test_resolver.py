"""PolicyResolver: the policy in force for the API and the scorer — stored, else file, else default;
polled by version stamp and file stamp; the last good policy kept when a new document is invalid.

Unit tests use an in-memory store with the same contract as services.policy.store.PolicySource and
a fake clock; the last tests run the resolver on the real PolicySource and a real redis-server.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.errors import ConfigError, PolicyError, StoreUnavailable
from services.names import RedisKeys
from services.policy.model import Policy, default_policy, parse_policy
from services.policy.resolver import (
    FilePolicyShadowed,
    PolicyEvent,
    PolicyInForce,
    PolicyRefused,
    PolicyResolver,
    PolicySwapped,
)
from services.policy.store import PolicySource, PolicyStore


def band(throttle_above: int, recover_at_or_below: int) -> str:
    return (
        f"frequency:\n  warn_above: {recover_at_or_below}\n  throttle_above: {throttle_above}\n"
        f"  recover_at_or_below: {recover_at_or_below}\n"
    )


FILE_BAND = band(12, 8)
STORED_BAND = band(5, 2)
INVALID = "frequency:\n  throttle_above: 5\n  recover_at_or_below: 9\n"  # line 2: would flap


class MemoryStore:
    """The store contract of services.policy.store.PolicySource, in memory: a version counter that
    moves on every write and removal, and a document parsed on `current()`."""

    def __init__(self) -> None:
        self.counter: int | None = None
        self.document: tuple[int, str] | None = None
        self.down = False
        self.stamp_reads = 0
        self.document_reads = 0

    def put(self, text: str) -> int:
        self.counter = (self.counter or 0) + 1
        self.document = (self.counter, text)
        return self.counter

    def delete(self) -> None:
        self.counter = (self.counter or 0) + 1
        self.document = None

    async def version_stamp(self) -> str | None:
        self.stamp_reads += 1
        if self.down:
            raise StoreUnavailable("redis down")
        return None if self.counter is None else str(self.counter)

    async def current(self, fallback: Policy) -> tuple[int | None, Policy]:
        self.document_reads += 1
        if self.down:
            raise StoreUnavailable("redis down")
        if self.document is None:
            return None, fallback
        version, text = self.document
        return version, parse_policy(text, f"stored policy v{version}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def events() -> list[PolicyEvent]:
    return []


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(FILE_BAND)
    return path


def rewrite(path: Path, text: str) -> None:
    """Replace the file so that its stamp surely changes (same-second writes keep mtime on some filesystems)."""
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def refusals(events: list[PolicyEvent]) -> list[PolicyRefused]:
    return [e for e in events if isinstance(e, PolicyRefused)]


# ---- nothing stored: the file, else the fallback (packaged default) ----


async def test_without_file_and_nothing_stored_the_packaged_default_applies(
    store: MemoryStore, events: list[PolicyEvent]
) -> None:
    resolver = PolicyResolver(store, on_event=events.append)
    assert await resolver.refresh() == PolicyInForce(None, default_policy())
    assert events == [PolicySwapped(PolicyInForce(None, default_policy()), "store")]  # first load is reported


async def test_with_a_file_and_nothing_stored_the_file_applies(store: MemoryStore, policy_file: Path) -> None:
    resolver = PolicyResolver(store, file=policy_file)
    assert resolver.in_force == PolicyInForce(None, parse_policy(FILE_BAND))  # before any poll
    assert await resolver.ensure_loaded() == PolicyInForce(None, parse_policy(FILE_BAND))
    assert resolver.fallback == parse_policy(FILE_BAND) and resolver.file == policy_file


def test_an_invalid_file_at_construction_is_a_config_error(store: MemoryStore, policy_file: Path) -> None:
    policy_file.write_text(INVALID)
    with pytest.raises(PolicyError, match=r"policy.yaml:2: frequency: recover_at_or_below \(9\) must be below"):
        PolicyResolver(store, file=policy_file)
    with pytest.raises(ConfigError, match="cannot read policy file"):
        PolicyResolver(store, file=policy_file.with_name("missing.yaml"))


def test_a_file_and_a_fallback_are_exclusive(store: MemoryStore, policy_file: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        PolicyResolver(store, file=policy_file, fallback=default_policy())


# ---- the stored policy: appears, changes, is removed ----


async def test_a_stored_policy_appears_changes_and_is_removed(
    store: MemoryStore, events: list[PolicyEvent]
) -> None:
    fallback = parse_policy(band(20, 10))
    resolver = PolicyResolver(store, fallback=fallback, on_event=events.append)
    assert await resolver.refresh() == PolicyInForce(None, fallback)
    store.put(STORED_BAND)
    assert await resolver.refresh() == PolicyInForce(1, parse_policy(STORED_BAND))
    store.put(band(7, 3))
    assert await resolver.refresh() == PolicyInForce(2, parse_policy(band(7, 3)))
    store.delete()
    assert await resolver.refresh() == PolicyInForce(None, fallback)
    assert [e.current.version for e in events if isinstance(e, PolicySwapped)] == [None, 1, 2, None]
    assert refusals(events) == []


async def test_the_document_is_read_only_when_the_stamp_moves(store: MemoryStore) -> None:
    store.put(STORED_BAND)
    resolver = PolicyResolver(store)
    for _ in range(3):
        await resolver.refresh()
    assert (store.stamp_reads, store.document_reads) == (3, 1)
    store.put(STORED_BAND)  # the same text as a new version: read again, and its version is in force
    assert (await resolver.refresh()).version == 2
    assert store.document_reads == 2


async def test_a_removed_stored_policy_falls_back_to_the_latest_file(
    store: MemoryStore, policy_file: Path, events: list[PolicyEvent]
) -> None:
    resolver = PolicyResolver(store, file=policy_file, on_event=events.append)
    store.put(STORED_BAND)
    await resolver.poll()
    rewrite(policy_file, band(20, 10))
    assert await resolver.poll() == PolicyInForce(1, parse_policy(STORED_BAND))  # the stored one still wins
    assert resolver.fallback == parse_policy(band(20, 10))
    assert FilePolicyShadowed(policy_file, PolicyInForce(1, parse_policy(STORED_BAND))) in events
    store.delete()
    assert await resolver.poll() == PolicyInForce(None, parse_policy(band(20, 10)))


# ---- an invalid stored document: the last good policy stays, reported once ----


async def test_an_invalid_stored_document_keeps_the_last_good_policy_and_is_reported_once(
    store: MemoryStore, events: list[PolicyEvent]
) -> None:
    resolver = PolicyResolver(store, on_event=events.append)
    store.put(STORED_BAND)
    good = await resolver.refresh()
    store.put(INVALID)
    assert await resolver.refresh() == good
    assert await resolver.refresh() == good  # the same stamp: not parsed again, not reported again
    [refused] = refusals(events)
    assert (refused.source, refused.kept) == ("store", good)
    assert str(refused.error).startswith("stored policy v2:2: frequency: recover_at_or_below (9) must be below")
    assert store.document_reads == 2
    store.put(band(7, 3))  # a valid one later is taken
    assert await resolver.refresh() == PolicyInForce(3, parse_policy(band(7, 3)))


async def test_an_invalid_stored_document_at_the_first_load_leaves_the_fallback_in_force(
    store: MemoryStore, policy_file: Path, events: list[PolicyEvent]
) -> None:
    store.put(INVALID)
    resolver = PolicyResolver(store, file=policy_file, on_event=events.append)
    assert await resolver.ensure_loaded() == PolicyInForce(None, parse_policy(FILE_BAND))
    assert [(r.source, r.kept.version) for r in refusals(events)] == [("store", None)]
    assert await resolver.ensure_loaded() == PolicyInForce(None, parse_policy(FILE_BAND))  # loaded: no re-poll
    assert store.stamp_reads == 1
    rewrite(policy_file, band(9, 4))  # nothing valid stored: a file change takes effect
    assert await resolver.poll() == PolicyInForce(None, parse_policy(band(9, 4)))


async def test_an_invalid_stored_document_then_removed_falls_back(store: MemoryStore) -> None:
    resolver = PolicyResolver(store)
    store.put(STORED_BAND)
    await resolver.refresh()
    store.put(INVALID)
    assert (await resolver.refresh()).version == 1
    store.delete()
    assert await resolver.refresh() == PolicyInForce(None, default_policy())


# ---- the file ----


async def test_an_edited_file_is_taken_and_an_invalid_edit_or_removal_keeps_the_old_policy(
    store: MemoryStore, policy_file: Path, events: list[PolicyEvent]
) -> None:
    resolver = PolicyResolver(store, file=policy_file, on_event=events.append)
    await resolver.poll()
    rewrite(policy_file, band(9, 4))
    assert await resolver.poll() == PolicyInForce(None, parse_policy(band(9, 4)))
    assert events[-1] == PolicySwapped(PolicyInForce(None, parse_policy(band(9, 4))), "file")
    rewrite(policy_file, INVALID)
    assert (await resolver.poll()).policy.throttle_above == 9
    await resolver.poll()  # the same invalid file: reported once
    policy_file.unlink()
    assert (await resolver.poll()).policy.throttle_above == 9
    assert [(r.source, type(r.error).__name__) for r in refusals(events)] == [
        ("file", "PolicyError"), ("file", "ConfigError"),
    ]
    assert resolver.fallback == parse_policy(band(9, 4))


async def test_a_file_change_is_taken_while_the_store_does_not_answer(
    store: MemoryStore, policy_file: Path
) -> None:
    resolver = PolicyResolver(store, file=policy_file)
    await resolver.poll()
    store.down = True
    rewrite(policy_file, band(9, 4))
    with pytest.raises(StoreUnavailable):
        await resolver.poll()
    assert resolver.in_force == PolicyInForce(None, parse_policy(band(9, 4)))


# ---- the store does not answer; the poll interval ----


async def test_a_store_failure_changes_nothing_and_the_next_poll_retries(store: MemoryStore) -> None:
    resolver = PolicyResolver(store)
    store.put(STORED_BAND)
    store.down = True
    with pytest.raises(StoreUnavailable):
        await resolver.ensure_loaded()
    assert resolver.in_force == PolicyInForce(None, default_policy())
    store.down = False
    assert (await resolver.ensure_loaded()).version == 1
    store.put(band(7, 3))
    store.down = True
    with pytest.raises(StoreUnavailable):
        await resolver.refresh()
    store.down = False
    assert (await resolver.refresh()).version == 2


async def test_refresh_polls_at_most_every_poll_s(store: MemoryStore, policy_file: Path) -> None:
    clock = Clock()
    resolver = PolicyResolver(store, file=policy_file, poll_s=2.0, clock=clock)
    await resolver.refresh()
    assert store.stamp_reads == 1
    store.put(STORED_BAND)
    rewrite(policy_file, band(9, 4))
    clock.now += 1.9
    assert await resolver.refresh() == PolicyInForce(None, parse_policy(FILE_BAND))  # not due: no I/O
    assert store.stamp_reads == 1 and resolver.fallback == parse_policy(FILE_BAND)
    clock.now += 0.1
    assert await resolver.refresh() == PolicyInForce(1, parse_policy(STORED_BAND))
    assert store.stamp_reads == 2 and resolver.fallback == parse_policy(band(9, 4))
    assert (await resolver.poll()).version == 1 and store.stamp_reads == 3  # poll(): now, whatever the interval


async def test_a_failed_poll_does_not_start_the_interval(store: MemoryStore) -> None:
    clock = Clock()
    resolver = PolicyResolver(store, poll_s=5.0, clock=clock)
    await resolver.refresh()
    clock.now += 5
    store.down = True
    with pytest.raises(StoreUnavailable):
        await resolver.refresh()
    store.down = False
    store.put(STORED_BAND)
    assert (await resolver.refresh()).version == 1  # polled again at once, not 5 s later


async def test_poll_s_zero_polls_on_every_use(store: MemoryStore) -> None:
    resolver = PolicyResolver(store, clock=Clock())
    for _ in range(3):
        await resolver.refresh()
    assert store.stamp_reads == 3


async def test_concurrent_refreshes_read_a_changed_document_once(store: MemoryStore) -> None:
    resolver = PolicyResolver(store)
    await resolver.refresh()
    store.put(STORED_BAND)
    results = await asyncio.gather(*(resolver.refresh() for _ in range(10)))
    assert {r.version for r in results} == {1}
    assert store.document_reads == 2  # the first load and the new version


# ---- on the real store (redis-server) ----


@pytest.mark.integration
async def test_on_redis_put_hand_written_invalid_and_delete(
    redis_client: Redis, unique: str, policy_file: Path
) -> None:
    keys = RedisKeys(f"t{unique}:")
    store = PolicyStore(redis_client, keys)
    events: list[PolicyEvent] = []
    resolver = PolicyResolver(PolicySource(redis_client, keys), file=policy_file, on_event=events.append)
    assert await resolver.ensure_loaded() == PolicyInForce(None, parse_policy(FILE_BAND))
    await store.put(STORED_BAND)
    assert await resolver.poll() == PolicyInForce(1, parse_policy(STORED_BAND))
    await redis_client.hset(keys.policy(), mapping={"version": "2", "yaml": INVALID})
    await redis_client.incr(keys.policy_version())
    assert (await resolver.poll()).version == 1
    [refused] = refusals(events)
    assert refused.source == "store" and "stored policy v2:2: frequency:" in str(refused.error)
    await store.delete()
    assert await resolver.poll() == PolicyInForce(None, parse_policy(FILE_BAND))


@pytest.mark.integration
async def test_on_redis_an_unreadable_record_is_refused_like_an_invalid_document(
    redis_client: Redis, unique: str
) -> None:
    keys = RedisKeys(f"t{unique}:")
    events: list[PolicyEvent] = []
    resolver = PolicyResolver(PolicySource(redis_client, keys), on_event=events.append)
    await redis_client.hset(keys.policy(), mapping={"version": "three", "yaml": "{}"})
    await redis_client.incr(keys.policy_version())
    assert await resolver.refresh() == PolicyInForce(None, default_policy())
    assert "the stored policy is unreadable" in str(refusals(events)[0].error)
