"""Crash recovery under a load that batches: SIGKILL mid-stream, restart, windows == recount.

The embedded broker reports end offsets wrongly after batched writes (../shared/TESTING.md),
which is why state lives in Redis with the offsets (docs/architecture.md). This test produces
thousands of events in batches while the worker runs, kills it with SIGKILL part-way, restarts
it, replays duplicates, and then compares every customer's windows with a brute-force recount
of the raw events.
"""

from __future__ import annotations

import random
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scorer.core.windows import bucket_of, in_window
from services.contract import parse_rfc3339, to_ms
from services.settings import CommonSettings
from tests.conftest import RedisTarget
from tests.helpers import FAST_GROUP_ENV, event, produce_events, service_process, stored_snapshots, wait_until

pytestmark = pytest.mark.integration

WINDOWS_MS = {"24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}


def recount(events: list[dict], window_ms: int, now_ms: int) -> int:
    return sum(
        1 for e in events if in_window(*bucket_of(to_ms(parse_rfc3339(e["occurred_at"])), now_ms), window_ms, now_ms)
    )


async def test_sigkill_under_batching_load_keeps_windows_exact(
    common_settings: CommonSettings, redis_target: RedisTarget, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    """On one Redis and on a Redis Cluster (where the worker's commits wait for a replica)."""
    infra_env = {**infra_env, "REDIS_URL": redis_target.url}
    common_settings = common_settings.model_copy(update={"redis_url": redis_target.url})
    redis_client = redis_target.client
    rng = random.Random(5)
    customers = [f"r{n}" for n in range(60)]
    # Per customer: touches and responses over the last 6 days (inside the grace period), in order.
    per_customer = {
        c: sorted(
            (event(i, c, days_ago=rng.uniform(0, 6), type_=rng.choice(["touch", "touch", "response"]),
                   channel=rng.choice(["email", "sms", "phone"])) for i in range(50)),
            key=lambda e: e["occurred_at"],
        )
        for c in customers
    }
    stream = [e for i in range(50) for c in customers for e in [per_customer[c][i]]]  # interleaved
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer"), "FATIGUE_BATCH_MAX_EVENTS": "200"}
    async def counted() -> int:
        found = await stored_snapshots(redis_client, common_settings, customers)
        return sum(snap["events_counted"] for snap in found.values())

    await produce_events(common_settings, stream[:1000])
    with service_process("scorer", env, tmp_path) as proc:
        await wait_until(lambda: _above(counted, 300), 60, "the worker to be part-way through")
        await produce_events(common_settings, stream[1000:])  # more load arrives while it dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    await produce_events(common_settings, stream[:500])  # duplicates (same event ids, new offsets)
    with service_process("scorer", env, tmp_path):
        await wait_until(lambda: _above(counted, len(stream) - 1), 90, "every event counted after the restart")
        async def drained() -> bool:
            done = 0
            for partition in range(common_settings.partitions):
                stored = await redis_client.hget(common_settings.keys.partition(partition).offsets(),
                                                 common_settings.events_topic)
                done += 0 if stored is None else int(stored) + 1
            return done >= len(stream) + 500

        await wait_until(drained, 60, "the duplicates consumed")
        snapshots = await stored_snapshots(redis_client, common_settings, customers)
    assert len(snapshots) == len(customers)

    for customer, snap in snapshots.items():
        assert snap["events_counted"] == 50, customer
        now_ms = to_ms(datetime.fromisoformat(snap["as_of"].replace("Z", "+00:00")).astimezone(UTC))
        for label, window_ms in WINDOWS_MS.items():
            for type_, plural in (("touch", "touches"), ("response", "responses")):
                expected = recount([e for e in per_customer[customer] if e["type"] == type_], window_ms, now_ms)
                assert snap["windows"][label][plural]["total"] == expected, (customer, label, type_)


async def _above(count, n: int) -> bool:
    return await count() > n
