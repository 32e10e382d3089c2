"""The scorer's edge: decode records, run the pure core, publish actions, commit state + offsets.

Independent of Faust: the Faust agent (scorer/app.py) hands batches of `Record`s in, and the timer
calls `fire_due`. Order of effects per batch: read state (WATCH) -> core -> publish actions and
wait for acks -> commit state, snapshots, due times and offsets in one Redis transaction. A crash
between publishing and committing re-publishes the same actions with the same `action_id` on
restart (at-least-once; receivers de-duplicate by id); a crash before publishing loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from scorer.clock import Clock
from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.views import snapshot
from scorer.history import contact_event
from scorer.publisher import ActionPublisher
from scorer.store import Changes, CommitConflict, StateStore, Transaction, list_entry_of, tp_field
from services.actions import Action
from services.contract import EventEnvelope, ProfileEnvelope, to_ms
from services.metrics import ScorerMetrics
from services.policy.model import Policy

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
DUE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Decoded:
    customer_id: str
    event: ContactEvent | None = None
    profile: dict[str, object] | None = None
    received_at_ms: int | None = None


def event_from_envelope(envelope: EventEnvelope) -> ContactEvent:
    return contact_event(envelope.event, envelope.producer)


class Processor:
    def __init__(
        self,
        store: StateStore,
        publisher: ActionPublisher,
        policy: Callable[[], Policy],
        clock: Clock,
        metrics: ScorerMetrics,
        *,
        events_topic: str,
        profiles_topic: str,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._events_topic = events_topic
        self._profiles_topic = profiles_topic
        self._lock = asyncio.Lock()  # the agent and the timer never interleave

    # ---- decoding ----

    def decode(self, record: Record) -> Decoded | None:
        """Decode one record; an undecodable one is counted, logged and skipped (never retried)."""
        try:
            if record.value is None:
                raise ValueError("record has no value")
            if record.topic == self._events_topic:
                env = EventEnvelope.model_validate_json(record.value)
                return Decoded(env.event.customer_id, event=event_from_envelope(env),
                               received_at_ms=to_ms(env.received_at))
            if record.topic == self._profiles_topic:
                penv = ProfileEnvelope.model_validate_json(record.value)
                return Decoded(penv.customer_id, profile=penv.profile.model_dump(exclude_none=True, mode="json"))
            raise ValueError(f"unexpected topic {record.topic!r}")
        except (ValidationError, ValueError) as exc:
            self._metrics.events.labels("bad_record").inc()
            log.warning("skipping bad record %s/%d@%d: %s", record.topic, record.partition, record.offset,
                        str(exc).replace("\n", " ")[:500])
            return None

    # ---- batches ----

    async def process(self, records: list[Record]) -> list[Action]:
        decoded = [(r, self.decode(r)) for r in records]
        async with self._lock:
            with self._metrics.batch_seconds.time():
                return await self._with_retries(lambda: self._process_once(decoded))

    async def _with_retries(self, attempt: Callable[[], Awaitable[list[Action]]]) -> list[Action]:
        for _ in range(MAX_COMMIT_ATTEMPTS - 1):
            try:
                return await attempt()
            except CommitConflict:
                self._metrics.commit_conflicts.inc()
        return await attempt()

    async def _process_once(self, decoded: list[tuple[Record, Decoded | None]]) -> list[Action]:
        customers = {d.customer_id for _, d in decoded if d is not None}
        tps = {tp_field(r.topic, r.partition) for r, _ in decoded}
        txn = await self._store.read(customers, tps)
        try:
            changes, actions = self._apply_all(txn, decoded)
            await self._publisher.publish(actions)
            await txn.commit(changes)
        except BaseException:
            await txn.abort()
            raise
        self._count_actions(actions)
        return actions

    def _apply_all(
        self, txn: Transaction, decoded: list[tuple[Record, Decoded | None]]
    ) -> tuple[Changes, list[Action]]:
        policy, now_ms = self._policy(), self._clock.now_ms()
        changes, actions = Changes(), []
        states = dict(txn.states)
        partition_of: dict[str, int] = {}
        for record, item in decoded:
            tp = tp_field(record.topic, record.partition)
            if record.offset <= txn.offsets.get(tp, -1):
                self._metrics.events.labels("replayed").inc()
                continue
            changes.offsets[tp] = max(changes.offsets.get(tp, -1), record.offset)
            if item is None:
                continue
            state = states.setdefault(item.customer_id, CustomerState(item.customer_id))
            actions += self._apply_one(state, item, now_ms, policy)
            changes.states[item.customer_id] = state
            partition_of[item.customer_id] = record.partition
        for customer_id, state in changes.states.items():
            changes.snapshots[customer_id] = snapshot(state, now_ms, policy)
            changes.lists[customer_id] = list_entry_of(state)
            due = engine.next_due_ms(state, policy)
            changes.due.setdefault(partition_of[customer_id], {})[customer_id] = due
        return changes, actions

    def _apply_one(self, state: CustomerState, item: Decoded, now_ms: int, policy: Policy) -> list[Action]:
        if item.profile is not None:
            self._metrics.events.labels("profile").inc()
            return engine.apply_profile(state, item.profile, now_ms, policy)
        assert item.event is not None
        outcome = engine.apply_event(state, item.event, now_ms, policy)
        self._metrics.events.labels(outcome.result).inc()
        if outcome.result != engine.COUNTED:
            log.debug("event %s of %s not counted: %s", item.event.event_id, item.customer_id, outcome.reason)
        if item.received_at_ms is not None:
            self._metrics.lag_seconds.set(max(0, now_ms - item.received_at_ms) / 1000)
        return outcome.actions

    # ---- timers ----

    async def fire_due(self, partitions: list[int]) -> list[Action]:
        """Re-evaluate customers whose due time passed, in the given (owned) partitions."""
        fired: list[Action] = []
        async with self._lock:
            for partition in partitions:
                now_ms = self._clock.now_ms()
                due = await self._store.due_customers(partition, now_ms, DUE_BATCH)
                if due:
                    fired += await self._with_retries(functools.partial(self._fire_once, partition, due))
        return fired

    async def _fire_once(self, partition: int, customer_ids: list[str]) -> list[Action]:
        txn = await self._store.read(customer_ids, [])
        try:
            policy, now_ms = self._policy(), self._clock.now_ms()
            changes, actions = Changes(), []
            entries: dict[str, int | None] = {}
            for customer_id in customer_ids:
                state = txn.states.get(customer_id)
                if state is None:
                    entries[customer_id] = None
                    continue
                actions += engine.on_due(state, now_ms, policy)
                changes.states[customer_id] = state
                changes.snapshots[customer_id] = snapshot(state, now_ms, policy)
                changes.lists[customer_id] = list_entry_of(state)
                entries[customer_id] = engine.next_due_ms(state, policy)
            changes.due[partition] = entries
            await self._publisher.publish(actions)
            await txn.commit(changes)
        except BaseException:
            await txn.abort()
            raise
        self._metrics.timers_fired.inc(len(customer_ids))
        self._count_actions(actions)
        return actions

    def _count_actions(self, actions: list[Action]) -> None:
        for action in actions:
            self._metrics.actions.labels(action["type"]).inc()
            log.info("action %s %s for %s: %s", action["action_id"], action["type"], action["customer_id"],
                     action["suggestion"])


