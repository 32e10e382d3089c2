"""The stored policy: validated before it is written, versioned atomically, read back by the scorer."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

import pytest
import yaml

from services.errors import PolicyError
from services.names import RedisKeys
from services.policy.model import DEFAULT_POLICY_FILE, default_policy, parse_policy
from services.policy.store import (
    PolicySource,
    PolicyStore,
    PolicyVersionMismatch,
    StoredPolicy,
    policy_values,
    sha256_of,
    yaml_text_of_json,
)
from services.redisio import RedisClient
from tests.conftest import RedisTarget

STRICT = "frequency:\n  warn_above: 4\n  throttle_above: 5\n  recover_at_or_below: 2\n"
BAD_GRACE = "version: 1\ngrace: 7days\n"  # line 2


# ---- pure helpers (no infrastructure) ----


def test_policy_values_fill_in_defaults() -> None:
    values = policy_values(STRICT)
    assert values["frequency"] == {
        "window": "30d", "warn_above": 4, "throttle_above": 5, "recover_at_or_below": 2,
        "uncounted_kinds": ["transactional"], "escalation_factor": 2.0,
    }
    assert values["cadence"]["by_stage"]["loyal"] == "90d"
    assert values["sending"]["quiet_hours"][0] == {"channels": ["push", "sms", "phone"], "from": "12:00", "to": "13:30"}
    assert policy_values(DEFAULT_POLICY_FILE.read_text()) == policy_values("{}")
    assert "for" in values["sending"]["quiet_periods"][0]  # the names the YAML uses, not Python's


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ('{"frequency": {"warn_above": 4, "throttle_above": 5, "recover_at_or_below": 2}}', True),
        ('{\n  "grace": "3d"\n}', True),
        ('{\t"grace": "3d"}', False),  # a tab YAML refuses: stored re-indented
        ('{"reply_latency": {"max_samples": 1e1}}', False),  # YAML reads 1e1 as a string
    ],
)
def test_json_bodies_become_yaml_that_reads_the_same(raw: str, kept: bool) -> None:
    obj = json.loads(raw)
    text = yaml_text_of_json(obj, raw)
    assert (text == raw) is kept
    assert yaml.safe_load(text) == obj


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": "3"}, "KeyError"),
        ({"version": "three", "yaml": "{}"}, "ValueError"),
        ({"version": "3", "yaml": "{}", "updated_at": "yesterday"}, "ValueError"),
    ],
)
def test_a_hand_written_record_is_reported_not_crashed_on(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(PolicyError, match=f"k: the stored policy is unreadable \\({reason}"):
        StoredPolicy.from_hash(fields, "k")


def test_a_minimal_hand_written_record_reads() -> None:
    stored = StoredPolicy.from_hash({"version": "4", "yaml": STRICT}, "k")
    assert stored.version == 4 and stored.sha256 == hashlib.sha256(STRICT.encode()).hexdigest()


# ---- against a real Redis and a real Redis Cluster (each test runs on both) ----


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    return redis_target.client


@pytest.fixture
def keys(redis_target: RedisTarget) -> RedisKeys:
    return redis_target.keys


@pytest.mark.integration
async def test_put_validates_then_stores_the_next_version(redis_client: RedisClient, keys: RedisKeys) -> None:
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    store = PolicyStore(redis_client, keys, now=lambda: at)
    assert await store.get() is None
    first = await store.put(STRICT)
    second = await store.put("grace: 3d\n")
    assert (first.version, second.version) == (1, 2)
    got = await store.get()
    assert got == StoredPolicy(version=2, yaml="grace: 3d\n", sha256=sha256_of("grace: 3d\n"), updated_at=at)
    assert await redis_client.get(keys.policy_version()) == "2"


@pytest.mark.integration
async def test_an_invalid_policy_is_refused_with_line_and_reason_and_nothing_changes(
    redis_client: RedisClient, keys: RedisKeys
) -> None:
    store = PolicyStore(redis_client, keys)
    await store.put(STRICT)
    with pytest.raises(PolicyError, match=r"^policy:2: grace: '7days' is not a duration"):
        await store.put(BAD_GRACE, "policy")
    stored = await store.get()
    assert stored is not None and (stored.version, stored.yaml) == (1, STRICT)
    assert await redis_client.get(keys.policy_version()) == "1"


@pytest.mark.integration
async def test_concurrent_puts_get_distinct_versions(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PolicyStore(redis_client, keys)
    documents = [STRICT.replace("throttle_above: 5", f"throttle_above: {n + 5}") for n in range(20)]
    results = await asyncio.gather(*(store.put(doc) for doc in documents))
    assert sorted(r.version for r in results) == list(range(1, 21))
    last = max(results, key=lambda r: r.version)
    assert await store.get() == last


@pytest.mark.integration
async def test_expected_version_guards_against_lost_updates(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PolicyStore(redis_client, keys)
    with pytest.raises(PolicyVersionMismatch, match="version none"):
        await store.put(STRICT, expected_version=3)
    assert (await store.put(STRICT, expected_version=0)).version == 1  # 0: only if none stored yet
    with pytest.raises(PolicyVersionMismatch) as refused:
        await store.put("grace: 3d\n", expected_version=0)
    assert (refused.value.expected, refused.value.current) == (0, 1)
    assert (await store.put("grace: 3d\n", expected_version=1)).version == 2
    stored = await store.get()
    assert stored is not None and stored.yaml == "grace: 3d\n"


@pytest.mark.integration
async def test_source_serves_the_fallback_until_a_policy_is_stored(redis_client: RedisClient, keys: RedisKeys) -> None:
    source = PolicySource(redis_client, keys)
    fallback = default_policy()
    assert await source.version_stamp() is None
    assert await source.current(fallback) == (None, fallback)
    await PolicyStore(redis_client, keys).put(STRICT)
    assert await source.version_stamp() == "1"
    assert await source.current(fallback) == (1, parse_policy(STRICT))


@pytest.mark.integration
async def test_source_refuses_an_invalid_document_written_by_hand(redis_client: RedisClient, keys: RedisKeys) -> None:
    await redis_client.hset(keys.policy(), mapping={"version": "7", "yaml": BAD_GRACE})
    with pytest.raises(PolicyError, match=r"stored policy v7:2: grace: '7days' is not a duration"):
        await PolicySource(redis_client, keys).current(default_policy())


@pytest.mark.integration
async def test_delete_removes_the_policy_and_versions_never_repeat(redis_client: RedisClient, keys: RedisKeys) -> None:
    store, source = PolicyStore(redis_client, keys), PolicySource(redis_client, keys)
    assert await store.delete() is None  # nothing stored: nothing to do
    await store.put(STRICT)
    with pytest.raises(PolicyVersionMismatch):
        await store.delete(expected_version=2)
    stamp = await source.version_stamp()
    assert await store.delete(expected_version=1) == 1
    assert await store.get() is None
    assert await source.version_stamp() != stamp  # the scorer notices the removal
    assert await source.current(default_policy()) == (None, default_policy())
    assert (await store.put(STRICT)).version == 3
