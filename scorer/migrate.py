"""`fatigue customers migrate`: move the scorer's state from the layout of earlier versions (one key per
customer) to the per-partition layout (services/names.py `PartitionKeys`), once, when upgrading.

Earlier versions kept `state:<id>` and `snapshot:<id>` per customer, `due:<group>:<p>`, `list:*` and
`offsets:<group>` (fields `topic/partition`). Each stored state moves to its Kafka partition's hash
(services/partitions.py `partition_of`), with a decision view computed from it (the policy in force
for the API), its entry on the lists reps work from, and a timer due at once (the scorer computes the
next one at its first evaluation). The processed offsets move to each partition's offsets. Every
partition written is claimed first (its epoch bumped), so a scorer still running is fenced instead of
overwriting it; run it with the scorers stopped. The old keys are deleted once moved. Idempotent:
run it again and it moves what is left.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scorer.core.views import decision_view
from scorer.lists import list_entry_of
from scorer.partition_store import PartitionChanges, RedisPartitionStore
from scorer.state_values import state_of_value, state_value
from services.names import RedisKeys
from services.partitions import partition_of
from services.policy.model import Policy
from services.redisio import RedisClient
from services.stored_values import ValueEncoder


@dataclass
class Migrated:
    states: int = 0
    unreadable: int = 0
    offsets: int = 0
    deleted: int = 0


async def migrate(redis: RedisClient, keys: RedisKeys, partitions: int, group: str, policy: Policy, now_ms: int,
                  encoder: ValueEncoder | None = None, batch: int = 500) -> Migrated:
    store = RedisPartitionStore(redis, keys)
    encoder = encoder or ValueEncoder()
    done = Migrated()
    epochs: dict[int, int] = {}

    async def epoch_of(partition: int) -> int:
        if partition not in epochs:
            epochs[partition] = (await store.claim(partition)).epoch
        return epochs[partition]

    prefix = f"{keys.prefix}state:"
    async for chunk in _chunks(redis, f"{prefix}*", batch):
        raws = await redis.mget(chunk)
        changes: dict[int, PartitionChanges] = defaultdict(PartitionChanges)
        for key, raw in zip(chunk, raws, strict=True):
            if raw is None:
                continue
            customer_id = key[len(prefix):]
            try:
                state = state_of_value(raw)
            except Exception:  # noqa: BLE001 - any shape a corrupt value may have: moved as it is
                done.unreadable += 1
                changes[partition_of(customer_id, partitions)].states[customer_id] = \
                    raw.encode() if isinstance(raw, str) else raw
                continue
            partition = partition_of(customer_id, partitions)
            change = changes[partition]
            change.states[customer_id] = state_value(encoder, state)
            change.views[customer_id] = encoder.encode(decision_view(state, now_ms, policy))
            change.entries[customer_id] = (None, list_entry_of(state))
            change.due[customer_id] = now_ms
            done.states += 1
        for partition, change in changes.items():
            await store.commit(partition, await epoch_of(partition), change)
        done.deleted += await redis.delete(*chunk, *(f"{keys.prefix}snapshot:{k[len(prefix):]}" for k in chunk))
    done.offsets = await _move_offsets(redis, keys, group, partitions, store, epoch_of)
    done.deleted += await redis.delete(f"{keys.prefix}offsets:{group}")
    for pattern in (f"{keys.prefix}snapshot:*", f"{keys.prefix}due:{group}:*", f"{keys.prefix}list:*"):
        async for chunk in _chunks(redis, pattern, batch):
            done.deleted += await redis.delete(*chunk)
    return done


async def _move_offsets(redis: RedisClient, keys: RedisKeys, group: str, partitions: int, store: RedisPartitionStore,
                        epoch_of: Callable[[int], Awaitable[int]]) -> int:
    old = f"{keys.prefix}offsets:{group}"
    fields = await redis.hgetall(old)
    by_partition: dict[int, dict[str, int]] = defaultdict(dict)
    for field, value in fields.items():
        topic, _, number = str(field).rpartition("/")
        if topic and number.isdigit() and int(number) < partitions:
            by_partition[int(number)][topic] = int(value)
    for partition, offsets in by_partition.items():
        await store.commit(partition, await epoch_of(partition), PartitionChanges(offsets=offsets))
    return sum(len(o) for o in by_partition.values())


async def _chunks(redis: RedisClient, pattern: str, size: int):  # type: ignore[no-untyped-def]
    """Keys matching `pattern` (SCAN), `size` at a time; the old layout's keys never carry a hash tag."""
    chunk: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=size):
        if "{p" in key:
            continue
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
