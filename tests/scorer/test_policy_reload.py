"""Policy hot reload: the scorer swaps in a changed, valid policy without restart and keeps the old
one when the new one is invalid (stored through the API or by hand in Redis, or the policy file)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from fatigue.embedded import free_port
from scorer.app import PolicyReloader
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import parse_policy
from services.policy.store import PolicySource, PolicyStore
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, event, produce_events, service_process, stored_snapshot, wait_until
from tests.ingest.helpers import ingest_settings_for, running_api

pytestmark = pytest.mark.integration

# Response-aware signals off, so that only the frequency band decides (a streak of unanswered
# touches would throttle on its own).
SIGNALS_OFF = """signals:
  complaint: {enabled: false}
  unanswered_streak: {enabled: false}
  reply_latency_slowdown: {enabled: false}
  response_rate_drop: {enabled: false}
  engagement_drop: {enabled: false}
"""


def band(throttle_above: int, recover_at_or_below: int) -> str:
    return (
        f"frequency:\n  warn_above: {recover_at_or_below}\n  throttle_above: {throttle_above}\n"
        f"  recover_at_or_below: {recover_at_or_below}\n{SIGNALS_OFF}"
    )


FILE_BAND = band(12, 8)
API_BAND = band(5, 2)
INVALID = "frequency:\n  throttle_above: 5\n  recover_at_or_below: 9\n"  # line 2: would flap


# ---- the reloader on a real Redis, polled by hand ----


class Harness:
    def __init__(self, redis: Redis, keys: RedisKeys, path: Path) -> None:
        self.store = PolicyStore(redis, keys)
        self.registry = CollectorRegistry()
        self.reloader = PolicyReloader(PolicySource(redis, keys), path, ScorerMetrics(self.registry))

    def gauge(self) -> float | None:
        return self.registry.get_sample_value("fatigue_scorer_policy_version")

    def failures(self, source: str) -> float:
        value = self.registry.get_sample_value("fatigue_scorer_policy_reload_failures_total", {"source": source})
        return value or 0.0


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(FILE_BAND)
    return path


@pytest.fixture
def harness(redis_client: Redis, unique: str, policy_file: Path) -> Harness:
    return Harness(redis_client, RedisKeys(f"t{unique}:"), policy_file)


def rewrite(path: Path, text: str) -> None:
    """Replace the file so that its stamp surely changes (same-second writes keep mtime on some filesystems)."""
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_the_file_applies_until_a_policy_is_stored_then_the_stored_one_wins(
    harness: Harness, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = harness.reloader
    await reloader.ensure_loaded()
    assert (reloader.version, reloader.policy) == (None, parse_policy(FILE_BAND))
    assert harness.gauge() == 0
    await harness.store.put(API_BAND)
    with caplog.at_level(logging.INFO, logger="scorer.app"):
        await reloader.poll()
    assert (reloader.version, reloader.policy.throttle_above) == (1, 5)
    assert harness.gauge() == 1
    assert "policy v1 in force" in caplog.messages
    rewrite(policy_file, band(20, 10))  # the file changes: noted, but the stored policy still wins
    await reloader.poll()
    assert (reloader.version, reloader.policy.throttle_above, reloader.file_policy.throttle_above) == (1, 5, 20)


async def test_a_stored_policy_is_in_force_before_the_first_batch(harness: Harness) -> None:
    await harness.store.put(API_BAND)
    await harness.reloader.ensure_loaded()
    assert (harness.reloader.version, harness.reloader.policy.throttle_above) == (1, 5)


async def test_an_invalid_document_written_into_redis_is_refused_once_and_the_old_policy_stays(
    harness: Harness, redis_client: Redis, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = RedisKeys(f"t{unique}:")
    reloader = harness.reloader
    await harness.store.put(API_BAND)
    await reloader.poll()
    await redis_client.hset(keys.policy(), mapping={"version": "2", "yaml": INVALID})
    await redis_client.incr(keys.policy_version())
    with caplog.at_level(logging.ERROR, logger="scorer.app"):
        await reloader.poll()
        await reloader.poll()  # the same version again: not re-parsed, not re-counted
    assert (reloader.version, reloader.policy.throttle_above) == (1, 5)
    assert harness.failures("store") == 1 and harness.gauge() == 1
    [message] = caplog.messages
    assert "policy v1 stays in force" in message
    assert "stored policy v2:2: frequency: recover_at_or_below (9) must be below throttle_above (5)" in message
    await harness.store.put(band(7, 3))  # a valid one later is taken
    await reloader.poll()
    assert (reloader.version, reloader.policy.throttle_above) == (3, 7)


async def test_removing_the_stored_policy_falls_back_to_the_latest_file(
    harness: Harness, policy_file: Path
) -> None:
    await harness.store.put(API_BAND)
    await harness.reloader.poll()
    rewrite(policy_file, band(20, 10))
    await harness.reloader.poll()
    assert harness.reloader.policy.throttle_above == 5  # the stored policy still wins
    await harness.store.delete()
    await harness.reloader.poll()
    assert (harness.reloader.version, harness.reloader.policy.throttle_above) == (None, 20)
    assert harness.gauge() == 0


async def test_an_edited_file_is_reloaded_and_an_invalid_edit_keeps_the_old_policy(
    harness: Harness, policy_file: Path
) -> None:
    reloader = harness.reloader
    await reloader.poll()
    rewrite(policy_file, band(9, 4))
    await reloader.poll()
    assert (reloader.version, reloader.policy.throttle_above) == (None, 9)
    rewrite(policy_file, INVALID)
    await reloader.poll()
    assert reloader.policy.throttle_above == 9 and harness.failures("file") == 1
    policy_file.unlink()
    await reloader.poll()
    assert reloader.policy.throttle_above == 9 and harness.failures("file") == 2


# ---- the real worker: reload without restart ----


async def scorer_metric(port: int, name: str) -> float | None:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return None
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def frequency_throttle_of(consumer: AIOKafkaConsumer, found: list[dict], customer: str) -> dict | None:
    batch = await consumer.getmany(timeout_ms=300)
    found.extend(json.loads(r.value) for records in batch.values() for r in records)
    for action in found:
        if action["customer_id"] == customer and action["type"] == "fatigue.throttle":
            return next(r for r in action["reasons"] if r["rule"] == "frequency_cap")
    return None


async def test_the_running_worker_applies_a_put_policy_and_keeps_it_over_an_invalid_one(
    common_settings: CommonSettings,
    redis_client: Redis,
    infra_env: dict[str, str],
    unique: str,
    tmp_path: Path,
    policy_file: Path,
) -> None:
    keys, web_port = common_settings.keys, free_port()
    env = {
        **infra_env,
        **FAST_GROUP_ENV,
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_WEB_PORT": str(web_port),
        "FATIGUE_DATA_DIR": str(tmp_path / "scorer"),
        "FATIGUE_POLICY_FILE": str(policy_file),  # 12 / 8
        "FATIGUE_POLICY_POLL_S": "0.5",
    }
    # Ten touches over the last days: none leaves a window soon, so no timer re-evaluates them.
    await produce_events(common_settings, [event(i, "A", days_ago=2 + 0.4 * i) for i in range(10)])

    async def snapshot(customer: str) -> dict | None:
        return await stored_snapshot(redis_client, common_settings, customer)

    async def counted(customer: str, n: int) -> dict | None:
        snap = await snapshot(customer)
        return snap if snap and snap["events_counted"] == n else None

    consumer = AIOKafkaConsumer(
        common_settings.actions_topic, bootstrap_servers=common_settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[dict] = []
    try:
        with service_process("scorer", env, tmp_path) as proc:
            snap = await wait_until(lambda: counted("A", 10), 60, "A's ten touches counted")
            assert snap["status"] == "normal"

            async with running_api(ingest_settings_for(common_settings)) as api:
                put = await api.put("/v1/policy", content=API_BAND, headers={"content-type": "application/yaml"})
            assert put.status_code == 200 and put.json()["version"] == 1

            async def version_in_force() -> float | None:
                return await scorer_metric(web_port, "fatigue_scorer_policy_version") == 1.0 or None

            await wait_until(version_in_force, 30, "the scorer to report policy v1 in force")
            await produce_events(common_settings, [event(10, "A", days_ago=1.5)])
            reason = await wait_until(lambda: frequency_throttle_of(consumer, found, "A"), 30, "A throttled")
            assert reason == {"rule": "frequency_cap", "window": "30d", "observed": 11, "threshold": 5}

            # An invalid document written straight into Redis: refused, v1 stays in force.
            await redis_client.hset(keys.policy(), mapping={"version": "2", "yaml": INVALID})
            await redis_client.incr(keys.policy_version())

            async def refused() -> float | None:
                name = 'fatigue_scorer_policy_reload_failures_total{source="store"}'
                return await scorer_metric(web_port, name)

            assert await wait_until(refused, 30, "the scorer to refuse the invalid policy") == 1.0
            await produce_events(common_settings, [event(i, "B", days_ago=2 + 0.4 * i) for i in range(6)])
            reason = await wait_until(lambda: frequency_throttle_of(consumer, found, "B"), 30, "B throttled")
            assert reason == {"rule": "frequency_cap", "window": "30d", "observed": 6, "threshold": 5}
            assert await scorer_metric(web_port, "fatigue_scorer_policy_version") == 1.0
            assert proc.poll() is None  # the same worker all along: no restart
    finally:
        await consumer.stop()
    log_text = "\n".join(p.read_text() for p in tmp_path.glob("scorer-*.log"))
    assert "policy v1 in force" in log_text
    assert "new policy refused, policy v1 stays in force" in log_text
