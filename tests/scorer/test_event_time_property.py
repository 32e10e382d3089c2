"""Event time decides, processing time only fires (issue 17): the same history gives the same answers
live, late, imported or replayed.

Random histories (a few customers, touches and responses of every kind over ~6 days, duplicates,
profiles) go through the live scorer — its Processor, on the in-memory partition store, batches
formed by what arrives at the same moment, timers fired by a simulated clock exactly as the due-time
index says — in one of four arrival patterns:

    in order   every event when it happened;
    lagged     every event the same time late (a pipeline behind by up to the settle);
    jittered   every event up to the settle late, each customer's in their order;
    imported   everything after the fact, in a few batches seconds apart, the profiles with it (an
               import, a late batch).

Whatever the pattern, the live scorer records the same transitions (type, moment, reasons, counts,
ids) as the in-order replay of the backtest, and leaves every customer on the same list. What it
sends the reps is what the backtest says it would send given the same arrivals; in order, that is
what the in-order replay sends.

The same property holds with the partition store in Redis — one Redis, and a Redis Cluster with the
commits waiting for a replica as the scorer's do there (`redis_target`) — with fewer examples (each
history is some dozens of round trips to Redis; the in-memory run covers the breadth).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from scorer.backtest import Arrival, ProfileChange, simulate
from scorer.clock import ManualClock
from scorer.core.state import ContactEvent, CustomerState
from scorer.decoding import Record
from scorer.lists import list_entry_of
from scorer.partition_store import MemoryPartitionStore, PartitionChanges, PartitionStore, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from services.actions import Action
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, encode, from_ms
from services.customer_lists import ListEntry
from services.deadletter import MemoryDeadLetterSink
from services.durations import DAY_MS, HOUR_MS, MINUTE_MS
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.partitions import partition_of
from services.policy.model import Policy
from services.redisio import RedisClient
from tests.conftest import RedisTarget
from tests.scorer.test_backtest_timers import TIGHT

T0 = 1_790_000_000_000
SETTLE_MS = 2 * HOUR_MS
PARTITIONS = 2
CUSTOMERS = ("c1", "c2", "c3", "c4")
EVENTS_TOPIC, PROFILES_TOPIC = "ev", "pr"
MODES = ("in_order", "lagged", "jittered", "imported")
TOUCH_KINDS = (None, "value", "promo", "transactional")
RESPONSE_KINDS = (None, "reply", "open", "click", "call_answered", "complaint", "unsubscribe", "bounce")


@dataclass
class History:
    events: list[ContactEvent]
    profiles: dict[str, dict[str, Any]]
    arrivals: list[int]
    """When each event arrives (processing time), per pattern."""
    until_ms: int
    mode: str
    profiles_at: int = T0
    """When the profiles arrive: at the start, or with an import (which brings them along)."""


@st.composite
def histories(draw: st.DrawFn) -> History:
    step = draw(st.sampled_from((MINUTE_MS, 17 * MINUTE_MS, HOUR_MS)))
    events: list[ContactEvent] = []
    for i in range(draw(st.integers(min_value=1, max_value=30))):
        at = T0 + step * draw(st.integers(min_value=0, max_value=6 * DAY_MS // step))
        customer = draw(st.sampled_from(CUSTOMERS))
        channel = draw(st.sampled_from(("email", "sms")))
        if draw(st.booleans()):
            events.append(ContactEvent(f"t{i}", "touch", customer, channel, at, draw(st.sampled_from(TOUCH_KINDS)),
                                       producer="p"))
        else:
            earlier = [e.event_id for e in events if e.customer_id == customer and e.type == "touch"]
            events.append(ContactEvent(f"r{i}", "response", customer, channel, at,
                                       draw(st.sampled_from(RESPONSE_KINDS)),
                                       in_reply_to=draw(st.sampled_from([None, *earlier])), producer="p"))
    events += draw(st.lists(st.sampled_from(events), max_size=3))  # duplicates
    events.sort(key=lambda e: e.occurred_at_ms)
    profile = st.fixed_dictionaries({"tier": st.sampled_from(("A", "B")),
                                     "stage": st.sampled_from(("prospect", "customer", "loyal"))})
    profiles = {c: draw(profile) for c in draw(st.lists(st.sampled_from(CUSTOMERS), unique=True))}
    mode = draw(st.sampled_from(MODES))
    arrivals = arrival_times(draw, events, mode)
    until = max(arrivals) + draw(st.integers(min_value=0, max_value=4 * DAY_MS))
    return History(events, profiles, arrivals, until, mode, min(arrivals) if mode == "imported" else T0)


def arrival_times(draw: st.DrawFn, events: list[ContactEvent], mode: str) -> list[int]:
    if mode == "in_order":
        return [e.occurred_at_ms for e in events]
    if mode == "lagged":
        lag = draw(st.integers(min_value=0, max_value=SETTLE_MS))
        return [e.occurred_at_ms + lag for e in events]
    if mode == "jittered":
        latest: dict[str, int] = {}
        out = []
        for e in events:
            at = max(latest.get(e.customer_id, 0), e.occurred_at_ms + draw(st.integers(0, SETTLE_MS)))
            latest[e.customer_id] = at
            out.append(at)
        return out
    end = max(e.occurred_at_ms for e in events) + draw(st.integers(min_value=0, max_value=3 * DAY_MS))
    batches = draw(st.integers(min_value=1, max_value=4))
    return [end + 1000 * (i * batches // len(events)) for i in range(len(events))]


# ---- the live scorer, on the in-memory store, with a simulated clock ----


class RecordingProcessor(Processor):
    """The Processor, keeping every transition the core made (sent to the rep or not)."""

    transitions: list[Action]

    def _decide(self, state: CustomerState, made: list[Action], now_ms: int, changes: PartitionChanges, *,
                wait: bool = False) -> list[Action]:
        self.transitions.extend(made)
        return super()._decide(state, made, now_ms, changes, wait=wait)


@dataclass
class Live:
    transitions: list[Action] = field(default_factory=list)
    delivered: list[Action] = field(default_factory=list)
    entries: dict[str, ListEntry] = field(default_factory=dict)


@dataclass
class Stored:
    """A partition store under test, and how the test reads what the scorer's timers and lists use."""

    store: PartitionStore
    next_due: Callable[[], Awaitable[int | None]]
    """The earliest due time of any customer (None: no timer)."""
    entries: Callable[[], Awaitable[dict[str, ListEntry]]]
    """customer -> their place on the lists, from every partition."""


def in_memory() -> Stored:
    store = MemoryPartitionStore()

    async def next_due() -> int | None:
        return min((d for p in store.partitions.values() for d in p.due.values()), default=None)

    async def entries() -> dict[str, ListEntry]:
        return {c: e for p in store.partitions.values() for c, e in p.entries.items()}

    return Stored(store, next_due, entries)


def in_redis(client: RedisClient, keys: RedisKeys, wait_replicas: int) -> Stored:
    store = RedisPartitionStore(client, keys, wait_replicas=wait_replicas)
    partitions = [keys.partition(p) for p in range(PARTITIONS)]

    async def next_due() -> int | None:
        firsts = [await client.zrange(p.due(), 0, 0, withscores=True) for p in partitions]
        return min((int(score) for first in firsts for _, score in first), default=None)

    async def entries() -> dict[str, ListEntry]:
        found = [await client.hgetall(p.customer_list_entries()) for p in partitions]
        return {c: ListEntry.from_json(raw) for stored in found for c, raw in stored.items()}

    return Stored(store, next_due, entries)


async def run_live(history: History, policy: Policy, stored: Stored | None = None) -> Live:
    stored = stored or in_memory()
    store, clock, publisher = stored.store, ManualClock(T0), MemoryActionPublisher()
    processor = RecordingProcessor(store, publisher, lambda: policy, clock, ScorerMetrics(CollectorRegistry()),
                                   events_topic=EVENTS_TOPIC, profiles_topic=PROFILES_TOPIC,
                                   dead_letters=MemoryDeadLetterSink(), timer_settle_s=SETTLE_MS / 1000)
    processor.transitions = []
    await processor.assign(list(range(PARTITIONS)))
    offsets: dict[tuple[str, int], int] = defaultdict(lambda: -1)

    def record(topic: str, customer: str, value: bytes) -> Record:
        partition = partition_of(customer, PARTITIONS)
        offsets[(topic, partition)] += 1
        return Record(topic, partition, offsets[(topic, partition)], value, customer.encode())

    arrivals: dict[int, list[Record]] = defaultdict(list)
    for customer, profile in sorted(history.profiles.items()):
        envelope = ProfileEnvelope(customer_id=customer, updated_at=from_ms(T0), profile=ProfileIn(**profile))
        arrivals[history.profiles_at].append(record(PROFILES_TOPIC, customer, encode(envelope)))
    for event, at in sorted(zip(history.events, history.arrivals, strict=True), key=lambda pair: pair[1]):
        arrivals[at].append(record(EVENTS_TOPIC, event.customer_id, envelope_of(event, at)))
    for at in sorted(arrivals):
        await fire_timers(processor, stored, clock, until_ms=at)
        clock.set(at)
        for partition in range(PARTITIONS):
            batch = [r for r in arrivals[at] if r.partition == partition]
            if batch:
                await processor.process(partition, batch)
    await fire_timers(processor, stored, clock, until_ms=history.until_ms + SETTLE_MS)
    return Live(processor.transitions, list(publisher.published), await stored.entries())


async def fire_timers(processor: Processor, stored: Stored, clock: ManualClock, until_ms: int) -> None:
    """Every timer the due-time index fires before `until_ms`, at the moment it fires."""
    for _ in range(10_000):
        due = await stored.next_due()
        if due is None or due > until_ms:
            return
        clock.set(max(clock.now_ms(), due))
        for partition in range(PARTITIONS):
            await processor.fire_due(partition)
    raise AssertionError("timers did not settle")


def envelope_of(event: ContactEvent, received_ms: int) -> bytes:
    body = EventIn.model_validate({
        "event_id": event.event_id, "type": event.type, "customer_id": event.customer_id, "channel": event.channel,
        "occurred_at": from_ms(event.occurred_at_ms).isoformat(), "kind": event.kind, "in_reply_to": event.in_reply_to,
    })
    return encode(EventEnvelope(producer=event.producer, received_at=from_ms(received_ms), event=body))


# ---- comparing ----


def per_customer(actions: list[Action], keys: tuple[str, ...] | None = None) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = defaultdict(list)
    for action in actions:
        found[action["customer_id"]].append(dict(action) if keys is None else tuple(action[k] for k in keys))
    return dict(found)


def lists_of(states: dict[str, CustomerState]) -> dict[str, ListEntry]:
    return {c: e for c, s in states.items() if (e := list_entry_of(s)) is not None}


TOLD = ("type", "at", "reasons", "previous_status", "status", "action_id")


@pytest.mark.timeout(600)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(history=histories())
async def test_live_late_imported_and_replayed_give_the_same_answers(history: History) -> None:
    await check_the_same_answers(history, in_memory())


# Fewer examples in Redis (dozens of round trips per history; WAIT on the Cluster): 40 take ~5 s on each target here.
@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_the_same_answers_with_the_partitions_in_redis(history: History, redis_target: RedisTarget) -> None:
    """One Redis, and the Cluster with every commit waiting for a replica; a key prefix per example."""
    keys = RedisKeys(f"{redis_target.keys.prefix}{uuid.uuid4().hex[:8]}:", cluster=redis_target.kind == "cluster")
    await check_the_same_answers(history, in_redis(redis_target.client, keys, int(keys.cluster)))


async def check_the_same_answers(history: History, stored: Stored) -> None:
    profiles = [ProfileChange(c, ProfileIn(**p).model_dump(exclude_none=True, mode="json"), at_ms=T0)
                for c, p in sorted(history.profiles.items())]  # as the scorer decodes them from the topic
    live = await run_live(history, TIGHT, stored)
    in_order = simulate(history.events, profiles, TIGHT, until_ms=history.until_ms, settle_ms=SETTLE_MS)
    arrived = [ProfileChange(p.customer_id, p.profile, at_ms=T0, received_ms=history.profiles_at) for p in profiles]
    as_arrived = simulate([Arrival(e, at) for e, at in zip(history.events, history.arrivals, strict=True)],
                          arrived, TIGHT, until_ms=history.until_ms, settle_ms=SETTLE_MS)

    # the transitions, in event time: the same whatever the arrival, and the same as the backtest's
    assert per_customer(live.transitions) == per_customer(in_order.actions)
    assert per_customer(as_arrived.actions) == per_customer(in_order.actions)
    # where everyone is left
    assert live.entries == lists_of(in_order.states) == lists_of(as_arrived.states)
    # what the reps get: what the backtest says for these arrivals; in order, the in-order replay's
    assert per_customer(live.delivered, TOLD) == per_customer(as_arrived.delivered, TOLD)
    if history.mode == "in_order":
        assert per_customer(live.delivered, TOLD) == per_customer(in_order.delivered, TOLD)
