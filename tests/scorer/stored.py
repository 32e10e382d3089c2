"""What the scorer stored for a customer, read back the way the API does: the state of its partition
decoded and the snapshot computed from it, or the decision view as written."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scorer.core.state import CustomerState
from scorer.core.views import snapshot
from scorer.state_values import state_of_value
from services import stored_values
from services.contract import to_ms
from services.names import RedisKeys
from services.policy.model import Policy, default_policy
from services.redisio import RedisClient


async def state_of(redis: RedisClient, prefix: str, partition: int, customer_id: str) -> CustomerState | None:
    raw = await redis.hget(RedisKeys(prefix).partition(partition).states(), customer_id)
    return None if raw is None else state_of_value(raw)


async def snapshot_of(redis: RedisClient, prefix: str, partition: int, customer_id: str, now: datetime,
                      policy: Policy | None = None) -> dict[str, Any]:
    state = await state_of(redis, prefix, partition, customer_id)
    assert state is not None, f"no state for {customer_id}"
    return snapshot(state, to_ms(now), policy or default_policy())


async def view_of(redis: RedisClient, prefix: str, partition: int, customer_id: str) -> dict[str, Any]:
    raw = await redis.hget(RedisKeys(prefix).partition(partition).views(), customer_id)
    assert raw, f"no decision view for {customer_id}"
    return stored_values.loads(raw)  # type: ignore[no-any-return]
