"""`fatigue repartition --partitions N`: change the partition count, the topics and the scorer's state together.

A customer's records go to the partition murmur2 of its id gives under the topic's count, and its state
lives under that partition's keys (services/partitions.py). Changing the count moves most customers, so
it is a procedure (docs/operations.md#changing-the-partition-count), which this command enforces:

    intake stopped (API, adapters, imports) -> scorers caught up -> scorers stopped
    -> fatigue repartition --partitions N -> every service restarted with FATIGUE_PARTITIONS=N

The command, in order; a refused precondition changes nothing (exit 2), an outage stops it (exit 1):

    a. N against the recorded count: fewer is refused (Kafka cannot take partitions from a topic), the
       same is nothing to do; a re-partition in progress to another count is refused;
    b. the scorer's consumer group (FATIGUE_SCORER_APP_ID) must have no member: a running scorer would
       write customers where the new count does not look for them;
    c. every old partition of the events and profiles topics must be processed: the offset stored with
       its state in Redis reaches the log end (a record not yet scored would be scored in the old place;
       what a partition the topics already had beyond the old count holds is in the new layout already);
    d. the events and profiles topics are grown to N partitions where they have fewer (CreatePartitions);
    e. the meta hash is marked (`repartition` = N: the scorer, the API and `fatigue customers` refuse to
       start meanwhile), then every customer whose partition changes is moved (scorer/repartition_move.py);
    f. the new count is recorded and the mark cleared in one script; a summary is printed.

Interrupted anywhere (a crash, Ctrl-C, an outage), running it again with the same N finishes it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, UnsupportedVersionError

from scorer.partition_store import Fenced
from scorer.repartition_move import Mover
from services.errors import FatigueError, StoreUnavailable
from services.kafka import kafka_security_kwargs
from services.kafka_errors import as_fatigue_error
from services.names import RedisKeys
from services.partitions import META_PARTITIONS, META_REPARTITION, Recorded, recorded
from services.redisio import REDIS_ERRORS, RedisClient
from services.settings import ScorerSettings

PROCEDURE = "docs/operations.md#changing-the-partition-count"
UNKNOWN_TOPIC = 3
"""Kafka's error code UNKNOWN_TOPIC_OR_PARTITION."""

_FINISH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[3])
return 1
"""
"""Record the new count and clear the mark at once (one key: one slot)."""


class RepartitionRefused(FatigueError):
    """A precondition of `fatigue repartition` does not hold; nothing was changed. Says what to do."""

    def __init__(self, message: str, action: str) -> None:
        super().__init__(message)
        self.operator_action = action


@dataclass
class Summary:
    old: int
    target: int
    grown: list[str] = field(default_factory=list)
    moved: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    resumed: bool = False


def old_count(meta: Recorded, topic_partitions: int, target: int) -> int | None:
    """Step a: the count the state was written for, when moving it to `target` is to be done; None when
    it is done already. RepartitionRefused for fewer partitions or another re-partition in progress.
    With no count recorded (no scorer or API ever ran), the events topic's count is the old one."""
    if meta.repartition is not None and meta.repartition != str(target):
        raise RepartitionRefused(
            f"a re-partition to {meta.repartition} partitions is in progress (or was interrupted)",
            f"Finish it first: `fatigue repartition --partitions {meta.repartition}` ({PROCEDURE}).")
    if meta.partitions is None:
        old = topic_partitions
    elif meta.partitions.isdigit():
        old = int(meta.partitions)
    else:
        raise RepartitionRefused(f"the recorded partition count ({META_PARTITIONS} of the meta hash) is not a "
                                 f"number: {meta.partitions[:40]!r}", "Repair it with redis-cli (HSET).")
    if meta.repartition is not None:
        return old  # the same target: take up where it stopped
    if target == old:
        return None
    if target < old:
        raise RepartitionRefused(
            f"--partitions {target} is fewer than the {old} partitions the state is written for: Kafka cannot "
            f"take partitions away from a topic",
            f"Keep FATIGUE_PARTITIONS={old}, or give --partitions more than {old}.")
    return old


# ---- Kafka: the topics, the group, the log ends ----


def _admin(settings: ScorerSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers,
                               request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
                               **kafka_security_kwargs(settings))


async def topic_partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """topic -> its partition count; RepartitionRefused when one does not exist."""
    described = await admin.describe_topics(topics)
    counts = {}
    for topic in described:
        if topic["error_code"] == UNKNOWN_TOPIC:
            raise RepartitionRefused(f"the topic {topic['topic']} does not exist",
                                     "Create the topics with `fatigue topics` (FATIGUE_PARTITIONS=N) instead: "
                                     "there is nothing to re-partition.")
        if topic["error_code"]:
            raise as_fatigue_error(KafkaError(f"describing {topic['topic']}: error {topic['error_code']}"),
                                   "describing the topics")
        counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def group_members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """The members of the consumer group, named (member id, client id, host)."""
    names = []
    for response in await admin.describe_consumer_groups([group]):
        for error_code, _, _, _, _, members in response.groups:
            if error_code:
                raise as_fatigue_error(KafkaError(f"describing group {group}: error {error_code}"),
                                       "describing the scorer's consumer group")
            names += [f"{m[0]} (client {m[1] or '?'} on {m[2] or '?'})" for m in members]
    return names


async def lagging(settings: ScorerSettings, redis: RedisClient, keys: RedisKeys, topics: list[str],
                  partitions: int) -> list[str]:
    """Every partition 0..`partitions`-1 of the topics whose records are not all processed, named with its
    lag: the offset stored with its state in Redis against the log end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
                                **kafka_security_kwargs(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(partitions)])
    finally:
        await consumer.stop()
    stored = await asyncio.gather(*(redis.hgetall(keys.partition(p).offsets()) for p in range(partitions)))
    behind = []
    for tp, end in sorted(ends.items()):
        done = stored[tp.partition].get(tp.topic)
        lag = end - (int(done) + 1 if done is not None else 0)
        if lag > 0:
            behind.append(f"{tp.topic}/{tp.partition}: {lag} records not processed (stored offset "
                          f"{done if done is not None else 'none'}, log end {end})")
    return behind


async def grow(admin: AIOKafkaAdminClient, counts: dict[str, int], target: int) -> list[str]:
    """Step d: the topics with fewer than `target` partitions grown to it; the names grown."""
    more = [t for t, n in counts.items() if n > target]
    if more:
        raise RepartitionRefused(
            f"{', '.join(more)} already {'has' if len(more) == 1 else 'have'} more than {target} partitions: "
            f"producers partition by the topic's count", f"Give --partitions {max(counts.values())}.")
    fewer = sorted(t for t, n in counts.items() if n < target)
    if not fewer:
        return []
    try:
        await admin.create_partitions({t: NewPartitions(total_count=target) for t in fewer})
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as exc:
        raise RepartitionRefused(
            f"the brokers cannot add partitions (CreatePartitions: {exc})",
            f"Grow {', '.join(fewer)} to {target} partitions with the brokers' own tool (kafka-topics.sh --alter "
            f"--partitions {target}), then run this again.") from None
    return fewer


# ---- the procedure ----


async def repartition(settings: ScorerSettings, redis: RedisClient, target: int, out: IO[str]) -> Summary | None:
    """Steps a to f (module docstring); None when the state already has `target` partitions."""
    started = time.monotonic()
    topics = [settings.events_topic, settings.profiles_topic]
    admin = _admin(settings)
    try:
        await admin.start()
    except KafkaError as exc:
        raise as_fatigue_error(exc, f"connecting to Kafka at {settings.kafka_bootstrap_servers}") from exc
    try:
        summary = await _checked(settings, admin, redis, topics, target, out)
    finally:
        await admin.close()
    if summary is None:
        return None
    await _mark(redis, settings.keys, summary)
    mover = Mover(redis, settings.keys, summary.old, target, wait_replicas=settings.wait_replicas,
                  wait_timeout_ms=settings.redis_wait_timeout_ms)
    try:
        summary.moved = await mover.run(lambda p, n: _say(out, f"partition {p}: {n} customers moved out"))
    except Fenced as exc:
        raise RepartitionRefused(f"a scorer claimed a partition while customers were moved: {exc}",
                                 f"Stop every scorer, then run `fatigue repartition --partitions {target}` "
                                 f"again: it takes up where it stopped.") from None
    await _finish(redis, settings.keys, target)
    summary.seconds = time.monotonic() - started
    return summary


async def _checked(settings: ScorerSettings, admin: AIOKafkaAdminClient, redis: RedisClient, topics: list[str],
                   target: int, out: IO[str]) -> Summary | None:
    """Steps a to d."""
    try:
        counts = await topic_partitions(admin, topics)
        meta = await recorded(redis, settings.keys)
        old = old_count(meta, counts[settings.events_topic], target)
        if old is None:
            _say(out, f"the state is already written for {target} partitions: nothing to do")
            return None
        members = await group_members(admin, settings.scorer_app_id)
        if members:
            raise RepartitionRefused(
                f"the scorer's consumer group {settings.scorer_app_id} has {len(members)} member(s): "
                f"{'; '.join(members)}",
                "Stop every scorer (the group must be empty; a scorer that was killed leaves the group once its "
                "session times out), then run this again.")
        behind = await lagging(settings, redis, settings.keys, topics, min(old, *counts.values()))
        if behind:
            raise RepartitionRefused(
                "the scorers have not processed everything yet: " + "; ".join(behind),
                "Stop the intake (API, adapters, imports), start the scorers with the current FATIGUE_PARTITIONS "
                f"until they caught up, stop them, then run this again ({PROCEDURE}).")
        summary = Summary(old, target, resumed=meta.repartition is not None)
        summary.grown = await grow(admin, counts, target)
    except KafkaError as exc:
        raise as_fatigue_error(exc, "asking Kafka") from exc
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"reading the stored offsets from Redis failed: {exc}") from exc
    return summary


async def _mark(redis: RedisClient, keys: RedisKeys, summary: Summary) -> None:
    """Step e's mark: the old count recorded if it was not, and the count customers move to."""
    try:
        await redis.hsetnx(keys.meta(), META_PARTITIONS, str(summary.old))
        await redis.hset(keys.meta(), META_REPARTITION, str(summary.target))
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"marking the re-partition in Redis failed: {exc}") from exc


async def _finish(redis: RedisClient, keys: RedisKeys, target: int) -> None:
    try:
        await redis.eval(_FINISH, 1, keys.meta(), META_PARTITIONS, str(target), META_REPARTITION)
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"recording the new partition count in Redis failed: {exc}") from exc


def _say(out: IO[str], line: str) -> None:
    out.write(f"{line}\n")
    out.flush()


def summary_lines(summary: Summary) -> list[str]:
    moved = sum(summary.moved.values())
    per = ", ".join(f"{p}: {n}" for p, n in sorted(summary.moved.items()))
    grown = (f"grew {', '.join(summary.grown)} to {summary.target} partitions" if summary.grown
             else f"the topics already had {summary.target} partitions")
    finished = " (an interrupted run finished)" if summary.resumed else ""
    return [
        f"re-partitioned {summary.old} -> {summary.target} partitions{finished}",
        f"{grown}; moved {moved} customers in {summary.seconds:.1f}s (out of partition {per or '-'})",
        f"now start every service with FATIGUE_PARTITIONS={summary.target}",
    ]
