"""Property: the windows the live scorer stores equal a brute-force recount of the distinct events,
whatever the order, the duplicates and the batching, with the partitions' states in memory, in one
Redis and in a Redis Cluster (its commits waiting for a replica, as the scorer's do there).

The scorer's Processor runs with its state cache off, so each batch reads its customers back from the
store as the last commit left them (encoded, compressed, decoded): what is checked is what a worker
taking the partition over, or the API, would find. Events stay inside the 7-day grace period, so none
is late. tests/scorer/core/test_windows.py and test_engine_properties.py hold the same for the pure
core; this is the same promise through the store.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from scorer.clock import ManualClock
from scorer.core.state import CustomerState
from scorer.core.views import snapshot
from scorer.core.windows import bucket_of, in_window
from scorer.decoding import Record
from scorer.partition_store import MemoryPartitionStore, PartitionStore, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from scorer.state_cache import StateCache
from scorer.state_values import state_of_value
from services.contract import EventEnvelope, EventIn, encode, from_ms
from services.deadletter import MemoryDeadLetterSink
from services.durations import DAY_MS
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.partitions import partition_of
from services.policy.model import default_policy
from tests.conftest import RedisTarget

POLICY = default_policy()
NOW = 1_790_000_000_000
PARTITIONS = 2
CUSTOMERS = ("c1", "c2", "c3")
CHANNELS = ("email", "sms", "phone")
EVENTS_TOPIC, PROFILES_TOPIC = "ev", "pr"

Raw = tuple[str, str, str, int]
"""customer, type, channel, offset from NOW (ms, <= 0)."""

raw_events = st.lists(
    st.tuples(st.sampled_from(CUSTOMERS), st.sampled_from(("touch", "response")), st.sampled_from(CHANNELS),
              st.integers(min_value=-6 * DAY_MS, max_value=0)),
    min_size=1, max_size=30,
)


def stream_of(raw: list[Raw], data: st.DataObject) -> tuple[list[int], list[list[int]]]:
    """Indexes of the distinct events as they arrive (duplicates among them, any order), cut in batches."""
    arriving = data.draw(st.permutations(list(range(len(raw))) + data.draw(
        st.lists(st.integers(min_value=0, max_value=len(raw) - 1), max_size=10))))
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(arriving) - 1)), max_size=5)))
    bounds = [0, *cuts, len(arriving)]
    return arriving, [arriving[a:b] for a, b in itertools.pairwise(bounds) if a < b]


async def run_live(store: PartitionStore, raw: list[Raw], batches: list[list[int]]) -> None:
    processor = Processor(store, MemoryActionPublisher(), lambda: POLICY, ManualClock(NOW),
                          ScorerMetrics(CollectorRegistry()), events_topic=EVENTS_TOPIC, profiles_topic=PROFILES_TOPIC,
                          dead_letters=MemoryDeadLetterSink(), cache=StateCache(0))
    await processor.assign(list(range(PARTITIONS)))
    offsets: Counter[int] = Counter()
    for batch in batches:
        by_partition: dict[int, list[Record]] = {}
        for i in batch:
            customer, type_, channel, offset_ms = raw[i]
            body = EventIn.model_validate({"event_id": f"e{i}", "type": type_, "customer_id": customer,
                                           "channel": channel, "occurred_at": from_ms(NOW + offset_ms).isoformat()})
            partition = partition_of(customer, PARTITIONS)
            value = encode(EventEnvelope(producer="p", received_at=from_ms(NOW), event=body))
            by_partition.setdefault(partition, []).append(
                Record(EVENTS_TOPIC, partition, offsets[partition], value, customer.encode()))
            offsets[partition] += 1
        for partition, records in sorted(by_partition.items()):
            await processor.process(partition, records)


def check_windows(states: dict[str, CustomerState], raw: list[Raw]) -> None:
    for customer in {r[0] for r in raw}:
        view = snapshot(states[customer], NOW, POLICY)
        mine = [r for r in raw if r[0] == customer]
        assert view["events_counted"] == len(mine)
        for window in POLICY.windows:
            for type_, plural in (("touch", "touches"), ("response", "responses")):
                for channel in CHANNELS:
                    expected = sum(1 for _, t, ch, off in mine if t == type_ and ch == channel
                                   and in_window(*bucket_of(NOW + off, NOW), window.ms, NOW))
                    assert view["windows"][window.label][plural]["by_channel"].get(channel, 0) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_events, data=st.data())
async def test_stored_windows_equal_a_recount_in_memory(raw: list[Raw], data: st.DataObject) -> None:
    store = MemoryPartitionStore()
    await run_live(store, raw, stream_of(raw, data)[1])
    states = {c: state_of_value(s) for p in store.partitions.values() for c, s in p.states.items()}
    check_windows(states, raw)


# Fewer examples in Redis (a round trip or two per batch, WAIT on the Cluster): 60 take ~2 s on each target here.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(raw=raw_events, data=st.data())
async def test_stored_windows_equal_a_recount_in_redis(raw: list[Raw], data: st.DataObject,
                                                       redis_target: RedisTarget) -> None:
    keys = RedisKeys(f"{redis_target.keys.prefix}{uuid.uuid4().hex[:8]}:", cluster=redis_target.kind == "cluster")
    await run_live(RedisPartitionStore(redis_target.client, keys, wait_replicas=int(keys.cluster)), raw,
                   stream_of(raw, data)[1])
    states = {}
    for partition in range(PARTITIONS):
        stored = await redis_target.client.hgetall(keys.partition(partition).states())
        states |= {c: state_of_value(s) for c, s in stored.items()}
    check_windows(states, raw)
