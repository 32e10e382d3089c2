"""Section 2: the pure core and the Processor without I/O, on the same events (the cost of the edge).

- pure core: the events decoded once up front, then `engine.apply_event` per event on states in
  a dict, with the clock passed in: what the decision logic itself costs. In this process (the core
  as installed: compiled with mypyc where the build could), and each implementation in a child
  process in turns on the same events — compiled, and pure Python (`FATIGUE_PURE_CORE=1`) — for
  their ratio (bench/core_throughput.py).
- Processor without I/O: `scorer.processor.Processor` as the scorer builds it (default policy,
  batches of `ScorerSettings().batch_max_events` records in topic order), but on a `MemoryStore`
  that keeps what `scorer.store.StateStore` would write to Redis — the same values of states and
  snapshots (services/stored_values.py, the default format; states read through the scorer's cache of
  decoded states, scorer/state_cache.py), due times, offsets — in dicts, an in-memory
  action publisher and dead-letter sink.
  Everything the edge does per batch is in it (decoding the envelopes, the core, snapshots, due
  times, serialising), only the network is not.

The events are section 1's generator (`bench.dataset`, 10 events per customer over 30 days).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry

from bench.core_throughput import COMPILED, PURE, measure_in_child, run_once, write_events
from bench.dataset import Dataset
from bench.harness import Contender, Context, Figure, Sample, interleave, relate
from scorer.clock import ManualClock
from scorer.core import engine
from scorer.core.implementation import is_compiled
from scorer.core.state import ContactEvent, CustomerState
from scorer.processor import Processor, Record
from scorer.publisher import MemoryActionPublisher
from scorer.state_cache import StateCache
from scorer.store import Changes
from services.deadletter import MemoryDeadLetterSink
from services.metrics import ScorerMetrics
from services.policy.model import default_policy
from services.settings import ScorerSettings
from services.stored_values import ValueEncoder, loads

SECTION = "2 edge"
EVENTS, PROFILES = "bench.events.v1", "bench.profiles.v1"


class MemoryTransaction:
    def __init__(self, store: MemoryStore, states: dict[str, CustomerState], offsets: dict[str, int]) -> None:
        self._store = store
        self.states = states
        self.offsets = offsets

    async def commit(self, changes: Changes) -> None:
        s = self._store
        for customer_id in changes.erased:
            s.states.pop(customer_id, None)
            s.snapshots.pop(customer_id, None)
        for customer_id in changes.erased:
            s.cache.forget(customer_id)
        for customer_id, state in changes.states.items():
            s.states[customer_id] = value = s.encoder.encode(state.to_json())
            s.cache.put(customer_id, value, state)
        for customer_id, snap in changes.snapshots.items():
            s.snapshots[customer_id] = s.encoder.encode(snap)
        for partition, entries in changes.due.items():
            due = s.due.setdefault(partition, {})
            for customer_id, at in entries.items():
                if at is None:
                    due.pop(customer_id, None)
                else:
                    due[customer_id] = at
        s.offsets.update(changes.offsets)

    async def abort(self) -> None:
        pass


class MemoryStore:
    """What `StateStore` keeps in Redis, kept in dicts (same values: the default stored format of
    services/stored_values.py unless another encoder is given), read through the same state cache;
    duck-typed for the Processor."""

    def __init__(self, encoder: ValueEncoder | None = None) -> None:
        self.encoder = encoder or ValueEncoder()
        self.cache = StateCache(ScorerSettings().state_cache_size)
        """The scorer's cache of decoded states, used as `StateStore` uses it (scorer/state_cache.py)."""
        self.states: dict[str, bytes] = {}
        self.snapshots: dict[str, bytes] = {}
        self.due: dict[int, dict[str, int]] = {}
        self.offsets: dict[str, int] = {}

    async def read(self, customer_ids: Iterable[str], tps: Iterable[str]) -> MemoryTransaction:
        states = {}
        for c in set(customer_ids):
            if raw := self.states.get(c):
                states[c] = self.cache.take(c, raw) or CustomerState.from_json(loads(raw))
        offsets = {tp: self.offsets[tp] for tp in set(tps) if tp in self.offsets}
        return MemoryTransaction(self, states, offsets)

    async def due_customers(self, partition: int, now_ms: int, limit: int) -> list[str]:
        due = self.due.get(partition, {})
        return sorted((c for c, at in due.items() if at <= now_ms), key=lambda c: due[c])[:limit]

    async def postpone(self, partition: int, customer_id: str, until_ms: int) -> None:
        self.due.setdefault(partition, {})[customer_id] = until_ms


def records_of(data: Dataset) -> list[Record]:
    next_offset: dict[int, int] = {}
    out = []
    for partition, key, value in data.records:
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + 1
        out.append(Record(EVENTS, partition, offset, value, key))
    return out


def make_processor(now_ms: int, encoder: ValueEncoder | None = None) -> tuple[Processor, MemoryStore]:
    store = MemoryStore(encoder)
    processor = Processor(
        store, MemoryActionPublisher(), default_policy, ManualClock(now_ms),  # type: ignore[arg-type]
        ScorerMetrics(CollectorRegistry()), events_topic=EVENTS, profiles_topic=PROFILES,
        dead_letters=MemoryDeadLetterSink(),
    )
    return processor, store


def run_core(events: list[ContactEvent], now_ms: int) -> float:
    elapsed, _ = run_once(events, now_ms)
    return len(events) / elapsed


async def run_processor(records: list[Record], now_ms: int, batch: int) -> Sample:
    processor, store = make_processor(now_ms)
    started = time.perf_counter()
    cpu = time.process_time()
    for i in range(0, len(records), batch):
        await processor.process(records[i:i + batch])
    elapsed = time.perf_counter() - started
    assert len(store.states) > 0
    return Sample(len(records) / elapsed, {"cpu_us_per_event": (time.process_time() - cpu) / len(records) * 1e6})


async def run(ctx: Context) -> list[Figure]:
    events = ctx.size("edge_events")
    data = Dataset.make(events, max(1, events // 10), 6, seed=11)
    records = records_of(data)
    now_ms = int(time.time() * 1000)
    decoder, _ = make_processor(now_ms)
    decoded = [decoder.decode(r).decoded for r in records]
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
