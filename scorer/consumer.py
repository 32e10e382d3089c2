"""The partitions this worker owns, read in batches straight from Kafka (no per-event dispatch).

aiokafka's group consumer subscribes to the events and profiles topics with the range assignor, which
gives a worker the same partition numbers of both (they are co-partitioned: same count, same key).
On assignment the worker claims each partition in the store (its epoch bumped: any earlier owner is
fenced) and seeks to the offsets stored with the partition's state, so Kafka's committed offsets are
only a record for lag monitoring: the state in Redis says where to go on. On revocation it finishes
the batch in flight and drops the partition and its cached states.

Each `getmany` answer is processed partition by partition, the two topics' records merged by their
timestamps (each topic in its own order), as one commit per partition (scorer/processor.py). Only
outages are retried, in place; a partition the store says another worker owns (`Fenced`) is given
up and the consumer rejoins its group. The consumer also knows whether each owned partition has
anything left to read: the event-lag gauge is 0 when none has.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from scorer.decoding import Record
from scorer.partition_store import Fenced
from scorer.processor import Processor
from services.errors import FatigueError
from services.kafka import kafka_security_kwargs
from services.kafka_errors import as_fatigue_error
from services.settings import ScorerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RETRY_S = 30.0
COMMIT_INTERVAL_S = 5.0
"""How often Kafka's committed offsets (informational: lag monitoring) follow the stored ones."""


@dataclass
class Progress:
    """Whether one owned partition's last fetch reached its end (for the timers and the lag gauge)."""

    caught_up: bool = False
    """Nothing older than what was processed is waiting to be read, in either topic."""


@dataclass
class BatchStats:
    batches: int = 0
    records: int = 0
    sizes: list[int] = field(default_factory=list)


def make_consumer(settings: ScorerSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.scorer_app_id,
        client_id=f"{settings.scorer_app_id}-consumer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
        max_poll_interval_ms=max(300_000, int(settings.stall_s * 1000)),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **kafka_security_kwargs(settings),
    )


class PartitionConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, processor: Processor, settings: ScorerSettings, *,
                 on_batch: Callable[[bool], None] = lambda started: None,
                 on_assigned: Callable[[], None] = lambda: None) -> None:
        self._consumer = consumer
        self._processor = processor
        self._settings = settings
        self._topics = (settings.events_topic, settings.profiles_topic)
        self._lock = asyncio.Lock()
        """Held while a batch is processed: a rebalance waits for it."""
        self._on_batch = on_batch
        self._on_assigned = on_assigned
        self.progress: dict[int, Progress] = {}
        self.stats = BatchStats()
        self._last_commit = 0.0
        self._rejoin = False

    # ---- group membership ----

    def subscribe(self) -> None:
        self._consumer.subscribe(list(self._topics), listener=self)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in revoked})
        async with self._lock:
            self._processor.revoke(partitions)
            for p in partitions:
                self.progress.pop(p, None)
        if partitions:
            log.info("partitions %s revoked", partitions)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in assigned})
        async with self._lock:
            owned = await until_done(lambda: self._processor.assign(partitions), "claiming partitions")
            for tp in assigned:
                position = owned[tp.partition].offsets.get(tp.topic)
                if position is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, position + 1)
            for p in partitions:
                self.progress[p] = Progress()
        log.info("partitions %s assigned (epochs %s)", partitions, {p: owned[p].epoch for p in partitions})
        self._on_assigned()

    # ---- the loop ----

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and process until `stop` is set; only outages are retried (in place)."""
        self.subscribe()
        while not stop.is_set():
            if self._rejoin:
                await self._rejoin_group()
            fetched = await self._fetch(stop)
            if fetched:
                await self._process(fetched)
            await self._commit_offsets()

    async def stopped(self) -> None:
        """Return once no batch is in flight (the loop stops at its next turn)."""
        async with self._lock:
            return

    async def _fetch(self, stop: asyncio.Event) -> dict[TopicPartition, list[Record]]:
        try:
            answer = await self._consumer.getmany(timeout_ms=self._settings.fetch_max_wait_ms,
                                                  max_records=self._settings.batch_max_events)
        except KafkaError as exc:
            error = as_fatigue_error(exc, f"reading {', '.join(self._topics)}")
            if not error.retriable:
                raise error from exc
            log.warning("scorer topics not read (%s); retrying in 1s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            return {}
        await self._note_positions()
        return {tp: [Record(r.topic, r.partition, r.offset, r.value, r.key, r.timestamp, tuple(r.headers or ()))
                     for r in records]
                for tp, records in answer.items() if records}

    async def _note_positions(self) -> None:
        """Which owned partitions have nothing older waiting (their timers may fire by the clock)."""
        caught: dict[int, bool] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            try:
                position = await self._consumer.position(tp)
            except (KafkaError, AssertionError, LookupError):  # revoked meanwhile, or not fetched yet
                position = None
            done = highwater is not None and position is not None and position >= highwater
            caught[tp.partition] = caught.get(tp.partition, True) and done
        for partition, done in caught.items():
            progress = self.progress.get(partition)
            if progress is not None:
                progress.caught_up = done

    async def _process(self, fetched: dict[TopicPartition, list[Record]]) -> None:
        by_partition: dict[int, list[list[Record]]] = {}
        for tp, records in fetched.items():
            by_partition.setdefault(tp.partition, []).append(records)
        async with self._lock:
            self._on_batch(True)
            try:
                for partition, runs in sorted(by_partition.items()):
                    records = list(heapq.merge(*runs, key=lambda r: r.timestamp_ms or 0))
                    await self._process_partition(partition, records)
            finally:
                self._on_batch(False)

    async def _process_partition(self, partition: int, records: list[Record]) -> None:
        if partition not in self._processor.owned():
            return  # revoked meanwhile (its new owner reads these again)
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.sizes.append(len(records))
        del self.stats.sizes[:-1000]
        try:
            await until_done(lambda: self._processor.process(partition, records), "processing a batch")
        except Fenced as exc:
            self._processor.count_fenced()
            log.warning("%s: giving partition %d up and rejoining the group", exc, partition)
            self._processor.revoke([partition])
            self.progress.pop(partition, None)
            self._rejoin = True
            return

    async def _rejoin_group(self) -> None:
        """After being fenced: leave and join again, to be told what this worker owns now."""
        self._rejoin = False
        self._consumer.unsubscribe()
        self.subscribe()

    async def _commit_offsets(self) -> None:
        now = time.monotonic()
        if now - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        offsets = {}
        for tp in self._consumer.assignment():
            position = self._processor.position(tp.partition, tp.topic)
            if position is not None:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # informational only: the stored offsets are what the next owner seeks to
            log.info("Kafka offsets not committed (%s); the state's own offsets are", exc)

    # ---- timers ----

    def behind(self, partition: int) -> bool:
        """The partition has records waiting to be read (its timers wait for its event time)."""
        progress = self.progress.get(partition)
        return progress is not None and not progress.caught_up

    def event_lag_s(self, now_ms: int) -> float:
        """0 when every owned partition is caught up; else the age (since the API received it) of the
        last event processed in the partition furthest behind: the oldest unprocessed one is younger."""
        behind = []
        for partition, progress in self.progress.items():
            owned = self._processor.owned_partition(partition)
            if not progress.caught_up and owned is not None and owned.received_at_ms is not None:
                behind.append(owned.received_at_ms)
        return max(0.0, (now_ms - min(behind)) / 1000) if behind else 0.0


async def until_done(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Run `attempt` until it succeeds; outages (retriable FatigueErrors) are retried in place."""
    delay_s = 0.5
    while True:
        try:
            return await attempt()
        except FatigueError as exc:
            if not exc.retriable:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MAX_RETRY_S)
