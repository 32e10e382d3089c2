"""The profiles topic compacts for real on Apache Kafka, and scorers rebuild profiles from it.

The topic is made by `fatigue topics` (cleanup.policy=compact, services/kafka.py); here its segments
are made small (segment.ms 100 ms, any dirty ratio) so the log cleaner works within seconds — the
embedded Tansu never compacts. Twenty versions of thirty customers' profiles, then tombstones for
three of them (DELETE /v1/customers/{id} writes those):

- compaction removes superseded versions and keeps each customer's latest record;
- a scorer that read the first versions before, restarted after the compaction (its committed
  offset now points into removed records), ends with every profile at its latest version;
- a scorer of a new group on an empty Redis (a rebuild from the log) ends the same way, and the
  erased customers stay erased.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from services.contract import ProfileEnvelope, ProfileIn, encode
from services.kafka import make_producer
from services.settings import CommonSettings
from tests.helpers import service_process, wait_until
from tests.kafka.conftest import KAFKA_GROUP_ENV
from tests.kafka.helpers import read_topic, stored_snapshots, topic_configs

pytestmark = pytest.mark.apache_kafka

CUSTOMERS = [f"p{n}" for n in range(30)]
ERASED = CUSTOMERS[:3]
VERSIONS = 20
SMALL_SEGMENTS = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"}


def _profile(version: int) -> ProfileIn:
    return ProfileIn(tier="ABC"[version % 3], owner_rep_id=f"rep-{version}")


async def _write_versions(settings: CommonSettings, versions: range) -> None:
    """Each version of every customer's profile, a round at a time with a pause, so segments roll."""
    producer = make_producer(settings, "test-profiles")
    await producer.start()
    try:
        for version in versions:
            for customer in CUSTOMERS:
                envelope = ProfileEnvelope(customer_id=customer, updated_at=datetime.now(UTC),
                                           profile=_profile(version))
                await producer.send(settings.profiles_topic, key=customer.encode(), value=encode(envelope))
            await producer.flush()
            await asyncio.sleep(0.25)
    finally:
        await producer.stop()


async def _erase(settings: CommonSettings) -> None:
    producer = make_producer(settings, "test-tombstones")
    await producer.start()
    try:
        for customer in ERASED:
            await producer.send(settings.profiles_topic, key=customer.encode(), value=None)
        await producer.flush()
    finally:
        await producer.stop()


async def _compact_quickly(settings: CommonSettings) -> None:
    """The topic's own settings (as `fatigue topics` made them) plus small segments."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        configs = (await topic_configs(admin, [settings.profiles_topic]))[settings.profiles_topic]
        # AlterConfigs replaces the topic's settings: keep the ones `fatigue topics` gave it.
        dynamic = {name: value for name, value in configs.items() if name in ("cleanup.policy", "min.insync.replicas")}
        assert dynamic.get("cleanup.policy") == "compact", dynamic
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.profiles_topic,
                                                  {**dynamic, **SMALL_SEGMENTS})])
    finally:
        await admin.close()


async def _profiles_in_redis(redis: Redis, settings: CommonSettings, expected: dict[str, dict | None]) -> bool:
    snapshots = await stored_snapshots(redis, settings, list(expected))
    return {c: snapshots[c]["profile"] if c in snapshots else None for c in expected} == expected


@pytest.mark.timeout(240)
async def test_profiles_compact_and_scorers_rebuild_the_latest_profile_from_the_compacted_log(
    kafka_settings: CommonSettings, kafka_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    settings = kafka_settings
    await _compact_quickly(settings)
    env = {**kafka_env, **KAFKA_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    early = {c: _profile(5).model_dump(exclude_none=True, mode="json") for c in CUSTOMERS}
    latest: dict[str, dict | None] = {c: _profile(VERSIONS).model_dump(exclude_none=True, mode="json")
                                      for c in CUSTOMERS}
    latest.update(dict.fromkeys(ERASED))

    await _write_versions(settings, range(1, 6))
    with service_process("scorer", env, tmp_path):
        await wait_until(lambda: _profiles_in_redis(redis_client, settings, early), 90, "versions 1-5 scored")
    await _write_versions(settings, range(6, VERSIONS + 1))
    await _erase(settings)
    written = len(CUSTOMERS) * VERSIONS + len(ERASED)

    async def compacted() -> list | None:
        records = await read_topic(settings.kafka_bootstrap_servers, settings.profiles_topic)
        return records if len(records) < written // 2 else None

    records = await wait_until(compacted, 90, f"the log cleaner to remove most of the {written} records")
    last = {r.key.decode(): r.value for r in records}  # in offset order: the last record of each key
    assert set(last) == set(CUSTOMERS)
    for customer, value in last.items():
        expected = latest[customer]
        assert (value is None) if expected is None else ProfileEnvelope.model_validate_json(value).profile.model_dump(
            exclude_none=True, mode="json") == expected, customer

    with service_process("scorer", env, tmp_path):  # restarted: resumes from its committed offsets
        await wait_until(lambda: _profiles_in_redis(redis_client, settings, latest), 90,
                         "the restarted scorer at the latest profiles")
    rebuild = {**env, "FATIGUE_SCORER_APP_ID": f"rebuild-{unique}", "FATIGUE_REDIS_PREFIX": f"r{unique}:"}
    rebuilt = CommonSettings.from_env(rebuild)
    with service_process("scorer", rebuild, tmp_path):  # a new group on an empty Redis: from the start
        await wait_until(lambda: _profiles_in_redis(redis_client, rebuilt, latest), 90,
                         "the rebuilt profiles at the latest versions")
