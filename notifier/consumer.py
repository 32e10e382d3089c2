"""The Kafka side of the notifier: poll the actions topic, dispatch each record, commit its offset.

Partitions of one poll are handled side by side; records of one partition in order. A record's
offset is committed only after its deliveries are durably scheduled in Redis (not sent: the
scheduler sends them), so a crash before that re-reads it — scheduling is idempotent and the
delivery ledger keeps a re-read record from sending twice.

A record that is not an action, or that dispatching fails on for any reason but an outage, goes
to the dead-letter topic with the error (stage `notifier.dispatch`) and its offset is committed:
one record never stops the notifier. Outages (StoreUnavailable, Redis or Kafka errors) propagate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from services.deadletter import DeadLetter, DeadLetterSink
from services.errors import FatigueError
from services.redisio import REDIS_ERRORS

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
MAX_RECORDS_PER_POLL = 100


class RecordDispatcher(Protocol):
    async def dispatch(self, raw: bytes | None, origin: str = "") -> list[str]:
        """Durably schedule one record's deliveries; raises when they could not be stored."""
        ...


STAGE = "notifier.dispatch"


class ActionConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, dispatcher: RecordDispatcher, dead_letters: DeadLetterSink,
                 on_dead_letter: Callable[[DeadLetter], None] = lambda letter: None,
                 on_round: Callable[[], None] = lambda: None) -> None:
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._dead_letters = dead_letters
        self._on_dead_letter = on_dead_letter
        self._on_round = on_round

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and dispatch until `stop` is set. Errors from the dispatcher propagate.
        `on_round` is called once per poll (the liveness heartbeat)."""
        while not stop.is_set():
            self._on_round()
            batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS_PER_POLL)
            if batch:
                await self._handle_batch(batch, stop)

    async def _handle_batch(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], stop: asyncio.Event
    ) -> None:
        outcomes = await asyncio.gather(
            *(self._handle_partition(tp, records, stop) for tp, records in batch.items()),
            return_exceptions=True,
        )
        errors = [item for item in outcomes if isinstance(item, BaseException)]
        if errors:
            raise errors[0]

    async def _handle_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> None:
        for record in records:
            if stop.is_set():
                return
            origin = f"{tp.topic}[{tp.partition}]@{record.offset}"
            try:
                await self._dispatcher.dispatch(record.value, origin=origin)
            except (*REDIS_ERRORS, KafkaError, OSError):
                raise
            except FatigueError as exc:
                if exc.retriable:
                    raise
                await self._dead_letter(tp, record, exc)
            except Exception as exc:  # a bug meeting this record: dead-letter it, go on with the next
                log.exception("dispatching %s failed", origin)
                await self._dead_letter(tp, record, exc)
            if not await self._commit(tp, record.offset + 1):
                return

    async def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], exc: BaseException) -> None:
        letter = DeadLetter.of(STAGE, topic=tp.topic, partition=tp.partition, offset=record.offset, key=record.key,
                               value=record.value, error=exc, failed_at_ms=int(time.time() * 1000),
                               timestamp_ms=record.timestamp)
        await self._dead_letters.publish([letter])  # BrokerUnavailable propagates: not committed, re-read
        self._on_dead_letter(letter)
        log.warning("dead-lettered action record %s[%d]@%d: %s: %s", tp.topic, tp.partition, record.offset,
                    letter.error_class, letter.error_message[:300])

    async def _commit(self, tp: TopicPartition, offset: int) -> bool:
        """Commit `offset`; False if the partition was taken away by a rebalance meanwhile."""
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offset %d of %s not committed, partition reassigned: %s", offset, tp, exc)
            return False
        return True
