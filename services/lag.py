"""Consumer lag per topic-partition, from the consumer's own view: the partition's high watermark
(the last fetch response's) minus the consumer's position. No request to the brokers beyond the
ones the consumer makes anyway, and no reliance on `end_offsets` (which the embedded broker reports
per batch, see docs/metrics.md).

Used by the scorer (Faust's consumer), the notifier and the intake (aiokafka consumers) every
`LAG_INTERVAL_S`; revoked partitions lose their series.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from services.metrics import ConsumerMetrics

LAG_INTERVAL_S = 5.0
POSITION_TIMEOUT_S = 2.0


class TopicPartitionLike(Protocol):
    topic: str
    partition: int


class LagSource(Protocol):
    """What a consumer offers (aiokafka's AIOKafkaConsumer and Faust's Consumer both do)."""

    def assignment(self) -> Iterable[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...

    def position(self, tp: Any) -> Awaitable[int | None]: ...


class LagReporter:
    def __init__(self, metrics: ConsumerMetrics, group: str, source: Callable[[], LagSource | None]) -> None:
        self._metrics = metrics
        self._group = group
        self._source = source
        self._reported: set[tuple[str, str]] = set()

    async def update(self) -> None:
        """Set lag and position of every assigned partition whose high watermark is known."""
        consumer = self._source()
        assigned = list(consumer.assignment()) if consumer is not None else []
        self._metrics.assigned_partitions.labels(self._group).set(len(assigned))
        seen: set[tuple[str, str]] = set()
        for tp in assigned:
            assert consumer is not None
            labels = (tp.topic, str(tp.partition))
            seen.add(labels)
            highwater = consumer.highwater(tp)
            position = await self._position(consumer, tp)
            if highwater is None or position is None:
                continue
            self._metrics.lag.labels(self._group, *labels).set(max(0, highwater - position))
            self._metrics.position.labels(self._group, *labels).set(position)
        for labels in self._reported - seen:
            for gauge in (self._metrics.lag, self._metrics.position):
                with contextlib.suppress(KeyError):
                    gauge.remove(self._group, *labels)
        self._reported = seen

    async def _position(self, consumer: LagSource, tp: Any) -> int | None:
        try:
            async with asyncio.timeout(POSITION_TIMEOUT_S):
                return await consumer.position(tp)
        except (TimeoutError, KafkaError, LookupError, RuntimeError):
            return None  # not fetched yet, or revoked meanwhile: next round

    async def run(self, stop: asyncio.Event, interval_s: float = LAG_INTERVAL_S) -> None:
        """Update every `interval_s` until `stop` is set."""
        while not stop.is_set():
            await self.update()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
