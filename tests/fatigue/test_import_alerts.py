"""How `fatigue import` waits for the scorer before it counts the alerts the import caused: not for
its whole `--alerts-wait` when no scorer is processing the import (the command returned after two
minutes in every test and for every user without a scorer), but as long as one is making progress."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from fatigue.import_alerts import wait_for_alerts
from services.names import RedisKeys

pytestmark = pytest.mark.integration

TOPIC = "ev"


async def test_no_scorer_ends_the_wait_once_nothing_advances(redis_client: Redis, unique: str) -> None:
    keys = RedisKeys(f"t{unique}:")
    started = time.monotonic()
    found = await wait_for_alerts(redis_client, keys, 2, "import", TOPIC, {0: 5, 1: 3}, 0, settle_s=0,
                                  timeout_s=60, no_progress_s=1.0)
    assert found.alerts is None and found.stalled
    assert time.monotonic() - started < 10  # not the 60 s allowed


async def test_a_scorer_making_progress_is_waited_for_beyond_the_no_progress_time(
    redis_client: Redis, unique: str
) -> None:
    keys = RedisKeys(f"t{unique}:")

    async def scorer() -> None:  # commits one offset of partition 0 every 0.6 s, then an alert
        for offset in range(6):
            await redis_client.hset(keys.partition(0).offsets(), TOPIC, str(offset))
            await asyncio.sleep(0.6)
        await redis_client.hincrby(keys.partition(0).alerts(), "import", 1)
        await redis_client.hset(keys.partition(0).offsets(), TOPIC, "6")

    running = asyncio.create_task(scorer())
    found = await wait_for_alerts(redis_client, keys, 1, "import", TOPIC, {0: 6}, 0, settle_s=0, timeout_s=60,
                                  no_progress_s=1.0)
    await running
    assert (found.alerts, found.stalled) == (1, False)
    assert found.waited_s > 3  # longer than the no-progress time: it went on while offsets moved
