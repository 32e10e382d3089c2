"""Section 2: the pure core and the Processor without I/O, on the same events (the cost of the edge).

- pure core: the events decoded once up front, then `engine.apply_event` per event on states in
  a dict, with the clock passed in: what the decision logic itself costs. In this process (the core
  as installed: compiled with mypyc where the build could), and each implementation in a child
  process in turns on the same events — compiled, and pure Python (`FATIGUE_PURE_CORE=1`) — for
  their ratio (bench/core_throughput.py).
- Processor without I/O: `scorer.processor.Processor` as the scorer builds it (default policy,
  fetches of `ScorerSettings().batch_max_events` records in topic order, each processed partition by
  partition as scorer/consumer.py does), but on the in-memory partition store
  (scorer/partition_store.py `MemoryPartitionStore`: the same stored values of states and decision
  views, due times, offsets, in dicts; states kept decoded by the scorer's cache), an in-memory action
  publisher and dead-letter sink. Everything the edge does per batch is in it (decoding the envelopes,
  the core, decision views, due times, serialising), only the network is not.

The events are section 1's generator (`bench.dataset`, 10 events per customer over 30 days).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from bench.core_throughput import COMPILED, PURE, measure_in_child, run_once, write_events
from bench.dataset import Dataset
from bench.harness import Contender, Context, Figure, Sample, interleave, relate
from scorer.clock import ManualClock
from scorer.core import engine
from scorer.core.implementation import is_compiled
from scorer.core.state import ContactEvent
from scorer.decoding import Record, decode
from scorer.partition_store import MemoryPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.state_cache import StateCache
from services.deadletter import MemoryDeadLetterSink
from services.metrics import ScorerMetrics
from services.policy.model import default_policy
from services.settings import ScorerSettings
from services.stored_values import ValueEncoder

SECTION = "2 edge"
EVENTS, PROFILES = "bench.events.v1", "bench.profiles.v1"


def records_of(data: Dataset) -> list[Record]:
    next_offset: dict[int, int] = {}
    out = []
    for partition, key, value in data.records:
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + 1
        out.append(Record(EVENTS, partition, offset, value, key))
    return out


def make_processor(now_ms: int, encoder: ValueEncoder | None = None) -> tuple[Processor, MemoryPartitionStore]:
    """The Processor as the scorer builds it, on the in-memory partition store (scorer/partition_store.py:
    the same values as the Redis one, kept in dicts), owning every partition of the dataset."""
    store = MemoryPartitionStore()
    processor = Processor(
        store, MemoryActionPublisher(), default_policy, ManualClock(now_ms),
        ScorerMetrics(CollectorRegistry()), events_topic=EVENTS, profiles_topic=PROFILES,
        dead_letters=MemoryDeadLetterSink(), encoder=encoder or ValueEncoder(),
        cache=StateCache(ScorerSettings().state_cache_size),
    )
    return processor, store


async def process_all(processor: Processor, records: list[Record], batch: int) -> None:
    """As the consumer hands them over: fetches of `batch` records, each processed partition by partition."""
    partitions = sorted({r.partition for r in records})
    await processor.assign(partitions)
    for i in range(0, len(records), batch):
        by_partition: dict[int, list[Record]] = {}
        for record in records[i:i + batch]:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, run in by_partition.items():
            await processor.process(partition, run)


def run_core(events: list[ContactEvent], now_ms: int) -> float:
    elapsed, _ = run_once(events, now_ms)
    return len(events) / elapsed


async def run_processor(records: list[Record], now_ms: int, batch: int) -> Sample:
    processor, store = make_processor(now_ms)
    started = time.perf_counter()
    cpu = time.process_time()
    await process_all(processor, records, batch)
    elapsed = time.perf_counter() - started
    assert any(p.states for p in store.partitions.values())
    return Sample(len(records) / elapsed, {"cpu_us_per_event": (time.process_time() - cpu) / len(records) * 1e6})


async def run(ctx: Context) -> list[Figure]:
    events = ctx.size("edge_events")
    data = Dataset.make(events, max(1, events // 10), 6, seed=11)
    records = records_of(data)
    now_ms = int(time.time() * 1000)
    decoded = [decode(r, EVENTS, PROFILES).decoded for r in records]
    core_events = [d.event for d in decoded if d is not None and d.event is not None]
    batch = ScorerSettings().batch_max_events
    ctx.say(f"  section 2: {len(records):,} events of {data.customers:,} customers, Processor batches of {batch}")

    async def core() -> Sample:
        cpu = time.process_time()
        rate = run_core(core_events, now_ms)
        return Sample(rate, {"cpu_us_per_event": (time.process_time() - cpu) / len(core_events) * 1e6})

    async def processor() -> Sample:
        return await run_processor(records, now_ms, batch)

    path = ctx.workdir / "core-events.json"
    write_events(core_events, path)

    def in_child(implementation: str) -> Callable[[], Awaitable[Sample]]:
        async def run_child() -> Sample:
            found = await asyncio.to_thread(measure_in_child, path, implementation, now_ms=now_ms)
            return Sample(found["rates"][0], {"cpu_us_per_event": found["cpu_us_per_event"][0]})
        return run_child

    installed = COMPILED if is_compiled(engine) else PURE
    figures = await interleave([
        Contender(SECTION, "pure core: engine.apply_event", "events/s", core, short="pure core",
                  note=f"the core as installed: {installed}"),
        Contender(SECTION, "Processor without I/O (memory store, same stored values)", "events/s", processor,
                  target=">= 50% of the pure core"),
        Contender(SECTION, "core compiled (mypyc), child process", "events/s", in_child(COMPILED),
                  target=">= 2x the pure-Python core"),
        Contender(SECTION, "core pure Python (FATIGUE_PURE_CORE=1), child process", "events/s", in_child(PURE),
                  short="pure-Python core"),
    ], ctx.rounds, say=ctx.say)
    relate(figures[1], figures[0])
    relate(figures[2], figures[3])
    return figures
