"""How many alerts an import caused: the messages the scorer sent reps for the imported customers.

History does not page anyone (scorer/core/delivery.py): importing the past records every transition
but tells a rep, per customer, at most one message describing where the import leaves them — once
the customer's timeline has caught up with the clock, `FATIGUE_TIMER_SETTLE_S` after their last
event arrived. The scorer counts the messages it sends per producer of the customer's latest event,
per partition (`PartitionKeys.alerts`, in the same commit as the state). So the import reads the
count of its producer before it starts, waits until the scorer has committed every event it stored
(the offsets stored with each partition's state reach the offsets the brokers acknowledged) and the
settle has passed, and reads it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.names import RedisKeys
from services.redisio import RedisClient

POLL_S = 0.5
NO_PROGRESS_S = 15.0
"""The wait ends early when no partition the import wrote to has advanced for this long: no scorer is
processing them (not running, or stuck), so waiting longer would only hold the command."""
TICK_ALLOWANCE_S = 2.0
"""The scorer fires due timers every FATIGUE_TICK_INTERVAL_S (1 s by default): a little longer than that."""


@dataclass(frozen=True)
class AlertCount:
    alerts: int | None
    """None: the scorer had not caught up within the wait (nothing known)."""
    waited_s: float
    stalled: bool = False
    """The scorer made no progress on the import's partitions for NO_PROGRESS_S: it is not running."""


async def alerts_sent(redis: RedisClient, keys: RedisKeys, partitions: int, producer: str) -> int:
    """The messages sent so far for customers whose latest event came from `producer`, over all partitions."""
    counts = await asyncio.gather(*(redis.hget(keys.partition(p).alerts(), producer) for p in range(partitions)))
    return sum(int(c) for c in counts if c is not None)


async def progress(redis: RedisClient, keys: RedisKeys, topic: str, positions: dict[int, int]) -> dict[int, int]:
    """partition -> the offset of `topic` the scorer has committed there (-1: none yet)."""
    stored = await asyncio.gather(*(redis.hget(keys.partition(p).offsets(), topic) for p in positions))
    return {p: -1 if s is None else int(s) for p, s in zip(positions, stored, strict=True)}


async def wait_for_alerts(redis: RedisClient, keys: RedisKeys, partitions: int, producer: str, topic: str,
                          positions: dict[int, int], before: int, settle_s: float, timeout_s: float,
                          no_progress_s: float = NO_PROGRESS_S) -> AlertCount:
    """The alerts caused since `before`, once the scorer processed `positions` and the settle passed;
    None when it had not within `timeout_s`, or had not advanced at all for `no_progress_s`."""
    started = last_change = time.monotonic()
    seen = await progress(redis, keys, topic, positions)
    while not all(seen[p] >= offset for p, offset in positions.items()):
        now = time.monotonic()
        if now - started > timeout_s or now - last_change > no_progress_s:
            return AlertCount(None, now - started, stalled=now - started <= timeout_s)
        await asyncio.sleep(POLL_S)
        current = await progress(redis, keys, topic, positions)
        if current != seen:
            seen, last_change = current, time.monotonic()
    await asyncio.sleep(settle_s + TICK_ALLOWANCE_S)  # the customers' timers: settle after their last arrival
    after = await alerts_sent(redis, keys, partitions, producer)
    return AlertCount(after - before, time.monotonic() - started)
