"""The Kafka partition is the unit of state: which partition a customer is in, and the partition count
every reader and writer of the state must agree on.

A customer's records are keyed by customer id, so Kafka's default partitioner puts all of them in
one partition: murmur2 of the key's bytes, made positive, modulo the partition count — what Apache
Kafka's Java client and aiokafka (every producer of this project) do. librdkafka's default
(`consistent_random`, CRC32) differs: a librdkafka producer must set `partitioner=murmur2_random`
(tests/services/test_partitions.py pins both). The scorer keeps each partition's state under its own
Redis hash tag (services/names.py `PartitionKeys`); the API finds a customer's state with
`partition_of`.

The count is recorded in Redis (`RedisKeys.meta()`, field `partitions`) by the first scorer or API to
start, and checked by every later one: a different count would silently read and write customers
in the wrong partition's keys, so it stops the process with the procedure to follow instead
(docs/operations.md#changing-the-partition-count). While `fatigue repartition` moves customers to a
new count (field `repartition`: the count they move to), nothing that reads or writes them starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from services.errors import ConfigError, StoreUnavailable
from services.names import RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient

META_PARTITIONS = "partitions"
META_REPARTITION = "repartition"
"""Set while `fatigue repartition` moves customers: the partition count they move to."""
META_LAYOUT = "layout"
LAYOUT_VERSION = "2"
"""Version 2: per-partition keys under hash tags ({p<N>}); version 1 (no record) kept one key per customer."""


class PartitionCountChanged(ConfigError):
    """The partition count differs from the one the stored state was written with."""

    operator_action = ("Set FATIGUE_PARTITIONS to the recorded count. To change the count: stop the intake (API, "
                       "adapters, imports), let the scorers catch up, stop them, run `fatigue repartition "
                       "--partitions N`, then restart every service with FATIGUE_PARTITIONS=N "
                       "(docs/operations.md#changing-the-partition-count).")


class RepartitionInProgress(ConfigError):
    """`fatigue repartition` was moving customers to another partition count and has not finished."""

    def __init__(self, target: str) -> None:
        super().__init__(f"a re-partition to {target} partitions is in progress (or was interrupted): customers are "
                         f"being moved between partitions")
        self.operator_action = (f"Finish it: `fatigue repartition --partitions {target}` (it takes up where it "
                                f"stopped), then start every service with FATIGUE_PARTITIONS={target} "
                                f"(docs/operations.md#changing-the-partition-count).")


@dataclass(frozen=True)
class Recorded:
    """What the meta hash says: the partition count the state was written for, and the one a re-partition
    in progress moves it to (None: not recorded / none in progress). Raw text, as stored."""

    partitions: str | None
    repartition: str | None


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) puts a record keyed `customer_id` in."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


async def recorded(redis: RedisClient, keys: RedisKeys) -> Recorded:
    """The meta hash's partition count and re-partition mark (one HMGET). StoreUnavailable."""
    try:
        count, moving = await redis.hmget(keys.meta(), [META_PARTITIONS, META_REPARTITION])
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"reading the recorded partition count from Redis failed: {exc}") from exc
    return Recorded(None if count is None else str(count), None if moving is None else str(moving))


async def refuse_while_repartitioning(redis: RedisClient, keys: RedisKeys) -> None:
    """RepartitionInProgress while `fatigue repartition` is moving customers. StoreUnavailable."""
    moving = (await recorded(redis, keys)).repartition
    if moving is not None:
        raise RepartitionInProgress(moving)


async def check_partition_count(redis: RedisClient, keys: RedisKeys, partitions: int) -> None:
    """Record the partition count if none is recorded; PartitionCountChanged when another one is,
    RepartitionInProgress while a re-partition is. StoreUnavailable when Redis does not answer."""
    await refuse_while_repartitioning(redis, keys)
    try:
        await redis.hsetnx(keys.meta(), META_PARTITIONS, str(partitions))
        await redis.hsetnx(keys.meta(), META_LAYOUT, LAYOUT_VERSION)
        recorded = await redis.hget(keys.meta(), META_PARTITIONS)
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"reading the recorded partition count from Redis failed: {exc}") from exc
    if recorded is None:
        return
    try:
        written_for = int(recorded)
    except ValueError:
        raise PartitionCountChanged(f"the partition count recorded in Redis (key {keys.meta()}, field "
                                    f"{META_PARTITIONS}) is not a number: {str(recorded)[:40]!r}") from None
    if written_for != partitions:
        raise PartitionCountChanged(
            f"FATIGUE_PARTITIONS={partitions}, but the state in Redis was written for {written_for} partitions "
            f"(key {keys.meta()}): customers would be looked for in the wrong partition")
