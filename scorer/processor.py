"""The scorer's edge: decode records, run the pure core, publish actions, commit state + offsets.

Independent of Faust: the Faust agent (scorer/app.py) hands batches of `Record`s in, and the timer
calls `fire_due`. Order of effects per batch: read state (WATCH) -> core -> publish dead letters
and actions and wait for acks -> commit state, snapshots, due times and offsets in one Redis
transaction. A crash between publishing and committing re-publishes the same actions with the
same `action_id` on restart (at-least-once; receivers de-duplicate by id); a crash before
publishing loses nothing.

A stream never stops for one record. A record that cannot be decoded, or that the core fails on,
goes to the dead-letter topic with the error (services/deadletter.py) and its offset is committed
like any other, so everything after it goes on. Which record of a batch the core fails on is found
by bisecting the batch (each half processed as its own transaction, in order). Before a record is
given up, it is tried once more with the fallback policy: when that works, the policy in force is
what fails (`on_policy_failure` reverts it) and the record is processed normally. Only
infrastructure errors (Kafka, Redis: retriable FatigueErrors) propagate, to be retried in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import ValidationError

from scorer.clock import Clock
from scorer.core import delivery, engine, timeline
from scorer.core.state import DUE_UNKNOWN, ContactEvent, CustomerState
from scorer.core.views import snapshot
from scorer.history import contact_event
from scorer.publisher import ActionPublisher
from scorer.store import Changes, CommitConflict, StateStore, StateUnreadable, Transaction, list_entry_of, tp_field
from services.actions import Action
from services.contract import EventEnvelope, ProfileEnvelope, to_ms
from services.deadletter import DeadLetter, DeadLetterSink
from services.errors import FatigueError
from services.metrics import ScorerMetrics
from services.policy.model import Policy

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
DUE_BATCH = 500
DECODE_STAGE = "scorer.decode"
PROCESS_STAGE = "scorer.process"
TIMER_RETRY_MS = 3_600_000
"""A customer whose timer the core fails on is tried again this much later."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    customer_id: str
    event: ContactEvent | None = None
    profile: dict[str, object] | None = None
    received_at_ms: int | None = None
    updated_at_ms: int = 0
    """A profile change: when it was made (its envelope's `updated_at`, the moment of the timeline it is)."""
    erase: bool = False
    """A tombstone on the profiles topic: the customer was erased (DELETE /v1/customers/{id})."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record of a batch: decoded, or the reason it goes to the dead-letter topic instead."""

    record: Record
    decoded: Decoded | None = None
    error: BaseException | None = None
    stage: str = DECODE_STAGE


class CoreFailure(Exception):
    """The core failed on this batch (or on a stored state it needs): not an outage, never retried in place."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def _customer_of_key(key: bytes) -> str:
    """The customer id a record is keyed by; ValueError when it is not one (the record is dead-lettered)."""
    customer_id = key.decode("utf-8")
    ProfileEnvelope.model_validate({"customer_id": customer_id, "updated_at": "2000-01-01T00:00:00Z", "profile": {}})
    return customer_id


def in_event_time(arrived: list[Decoded]) -> list[Decoded]:
    """One customer's records of a batch: the events between two profile changes in the order they
    happened (stable for equal times), the profile changes where they came. What arrives together is
    evaluated in event time, as if it had come in order."""
    ordered: list[Decoded] = []
    run: list[Decoded] = []
    for decoded in arrived:
        if decoded.event is not None:
            run.append(decoded)
            continue
        ordered += sorted(run, key=_occurred_at)
        run = []
        ordered.append(decoded)
    return ordered + sorted(run, key=_occurred_at)


def _occurred_at(decoded: Decoded) -> int:
    assert decoded.event is not None
    return decoded.event.occurred_at_ms


def event_from_envelope(envelope: EventEnvelope) -> ContactEvent:
    return contact_event(envelope.event, envelope.producer)


class Work(Protocol):
    """A unit the processor runs in one transaction: a slice of a batch, or due customers."""

    size: int

    def split(self) -> tuple[Work, Work]: ...

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        """Apply the core under `policy`; commit (or, with commit=False, only check it runs).
        Raises CoreFailure when the core fails, retriable FatigueErrors on outages."""
        ...

    async def give_up(self, cause: BaseException) -> list[Action]:
        """Set aside a single unit the core cannot process (dead letter / postponed timer)."""
        ...


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
        dead_letters: DeadLetterSink,
        fallback_policy: Callable[[], Policy | None] = lambda: None,
        on_policy_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        timer_settle_s: float = 0.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._events_topic = events_topic
        self._profiles_topic = profiles_topic
        self._dead_letters = dead_letters
        self._fallback_policy = fallback_policy
        self._on_policy_failure = on_policy_failure
        self._settle_ms = int(timer_settle_s * 1000)
        self._lock = asyncio.Lock()  # the agent and the timer never interleave

    def policy_in_force(self) -> Policy:
        return self._policy()

    # ---- decoding ----

    def decode(self, record: Record) -> Item:
        """Decode one record; an undecodable one carries its error (it goes to the dead-letter topic)."""
        try:
            if record.value is None and record.topic == self._profiles_topic and record.key:
                return Item(record, Decoded(_customer_of_key(record.key), erase=True))
            if record.value is None:
                raise ValueError("record has no value")
            if record.topic == self._events_topic:
                env = EventEnvelope.model_validate_json(record.value)
                return Item(record, Decoded(env.event.customer_id, event=event_from_envelope(env),
                                            received_at_ms=to_ms(env.received_at)))
            if record.topic == self._profiles_topic:
                penv = ProfileEnvelope.model_validate_json(record.value)
                profile = penv.profile.model_dump(exclude_none=True, mode="json")
                return Item(record, Decoded(penv.customer_id, profile=profile, updated_at_ms=to_ms(penv.updated_at)))
            raise ValueError(f"unexpected topic {record.topic!r}")
        except (ValidationError, ValueError, RecursionError, OverflowError) as exc:  # UnicodeError is a ValueError
            return Item(record, error=exc, stage=DECODE_STAGE)

    # ---- batches ----

    async def process(self, records: list[Record]) -> list[Action]:
        items = [self.decode(r) for r in records]
        async with self._lock:
            with self._metrics.batch_seconds.time():
                return await self._run(RecordsWork(self, items))

    async def _run(self, work: Work) -> list[Action]:
        try:
            return await self._with_retries(lambda: work.run(self._policy(), commit=True))
        except CoreFailure as failure:
            if work.size > 1:
                first, second = work.split()
                return await self._run(first) + await self._run(second)
            cause = failure.cause
            if await self._policy_to_blame(work, cause):
                return await self._run(work)
            return await self._with_retries(lambda: work.give_up(cause))

    async def _policy_to_blame(self, work: Work, cause: BaseException) -> bool:
        """True when the fallback policy runs what the policy in force failed on (and it was reverted)."""
        current, fallback = self._policy(), self._fallback_policy()
        if fallback is None or fallback is current or self._on_policy_failure is None:
            return False
        try:
            await self._with_retries(lambda: work.run(fallback, commit=False))
        except CoreFailure:
            return False
        await self._on_policy_failure(cause)
        return self._policy() is not current

    async def _with_retries(self, attempt: Callable[[], Awaitable[list[Action]]]) -> list[Action]:
        for _ in range(MAX_COMMIT_ATTEMPTS - 1):
            try:
                return await attempt()
            except CommitConflict:
                self._metrics.commit_conflicts.inc()
        return await attempt()

    async def read(self, customers: set[str], tps: set[str]) -> Transaction:
        try:
            return await self._store.read(customers, tps)
        except StateUnreadable as exc:
            raise CoreFailure(exc) from exc

    async def commit(self, txn: Transaction, changes: Changes, actions: list[Action],
                     letters: list[DeadLetter]) -> None:
        await self._dead_letters.publish(letters)
        await self._publisher.publish(actions)
        await txn.commit(changes)

    def apply_all(self, txn: Transaction, items: list[Item], policy: Policy) -> tuple[Changes, list[Action],
                                                                                     list[DeadLetter]]:
        try:
            return self._apply_all(txn, items, policy)
        except FatigueError:
            raise
        except Exception as exc:  # the core failed: bisect, never retry in place
            raise CoreFailure(exc) from exc

    def _apply_all(self, txn: Transaction, items: list[Item], policy: Policy) -> tuple[Changes, list[Action],
                                                                                      list[DeadLetter]]:
        now_ms = self._clock.now_ms()
        changes, letters = Changes(), []
        states = dict(txn.states)
        partition_of: dict[str, int] = {}
        arrived: dict[str, list[Decoded]] = {}
        """customer -> what this batch brings them, in arrival order (applied below, in event time)."""
        earliest_received: int | None = None
        for item in items:
            record = item.record
            tp = tp_field(record.topic, record.partition)
            if record.offset <= txn.offsets.get(tp, -1):
                self._metrics.events.labels("replayed").inc()
                continue
            changes.offsets[tp] = max(changes.offsets.get(tp, -1), record.offset)
            if item.error is not None:
                letters.append(self._letter(item, now_ms))
                continue
            assert item.decoded is not None
            customer_id = item.decoded.customer_id
            if item.decoded.erase:
                arrived.pop(customer_id, None)  # what came before the erasure is erased with it
                self._erase(customer_id, record.partition, states, changes)
                continue
            changes.erased.discard(customer_id)
            arrived.setdefault(customer_id, []).append(item.decoded)
            partition_of[customer_id] = record.partition
            received = item.decoded.received_at_ms
            if received is not None and (earliest_received is None or received < earliest_received):
                earliest_received = received
        if earliest_received is not None:  # the batch's oldest event: one slow partition is not hidden
            self._metrics.lag_seconds.set(max(0, now_ms - earliest_received) / 1000)
        actions: list[Action] = []
        for customer_id, decoded in arrived.items():
            state = states.setdefault(customer_id, CustomerState(customer_id))
            made = [a for d in in_event_time(decoded) for a in self._apply_one(state, d, policy)]
            if self._settle_ms == 0:  # no settle: the clock fires what is due at once
                made += timeline.advance(state, now_ms, policy)
            newest = max((d.event.occurred_at_ms for d in decoded if d.event is not None), default=None)
            actions += self._decide(state, made, now_ms, wait=delivery.is_history(newest, now_ms, self._settle_ms))
            changes.states[customer_id] = state
        for customer_id, state in changes.states.items():
            due = self._fire_at(state, policy, now_ms, arrived=True)
            changes.snapshots[customer_id] = snapshot(state, now_ms, policy, next_due=due)
            changes.lists[customer_id] = list_entry_of(state)
            changes.due.setdefault(partition_of[customer_id], {})[customer_id] = due
        return changes, actions, letters

    def _decide(self, state: CustomerState, made: list[Action], now_ms: int, *, wait: bool = False) -> list[Action]:
        """The one message (at most) the rep gets for what one piece of work made (scorer/core/delivery.py)."""
        decision = delivery.decide(state, made, now_ms, wait=wait)
        for action, reason in decision.withheld:
            self._metrics.actions_withheld.labels(reason).inc()
            log.debug("action %s %s for %s withheld (%s)", action["action_id"], action["type"],
                      action["customer_id"], reason)
        return [decision.sent] if decision.sent is not None else []

    def _fire_at(self, state: CustomerState, policy: Policy, now_ms: int, *, arrived: bool) -> int | None:
        """When the due-time index fires the customer: its next due time (in event time), or earlier
        when a count in a window changes (the stored snapshot stays current); never sooner than
        `timer_settle` after an arrival, so that what arrives together is evaluated together."""
        windows = [w.ms for w in policy.for_profile(state.profile).windows]
        due = now_ms if state.due_ms == DUE_UNKNOWN or state.pending_action is not None else state.due_ms
        times = [t for t in (due, state.counts.next_expiry_ms(windows, now_ms)) if t is not None]
        if not times:
            return None
        return max(min(times), now_ms + self._settle_ms) if arrived else min(times)

    def _erase(self, customer_id: str, partition: int, states: dict[str, CustomerState], changes: Changes) -> None:
        states.pop(customer_id, None)
        changes.states.pop(customer_id, None)
        changes.erased.add(customer_id)
        changes.lists[customer_id] = None
        changes.due.setdefault(partition, {})[customer_id] = None
        self._metrics.events.labels("erased").inc()
        log.info("customer %s erased (tombstone on the profiles topic)", customer_id)

    def _letter(self, item: Item, now_ms: int) -> DeadLetter:
        assert item.error is not None
        r = item.record
        return DeadLetter.of(item.stage, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                             value=r.value, error=item.error, failed_at_ms=now_ms, timestamp_ms=r.timestamp_ms)

    def _apply_one(self, state: CustomerState, item: Decoded, policy: Policy) -> list[Action]:
        if item.profile is not None:
            self._metrics.events.labels("profile").inc()
            return timeline.apply_profile(state, item.profile, item.updated_at_ms, policy)
        assert item.event is not None
        outcome = timeline.apply_event(state, item.event, policy)
        self._metrics.events.labels(outcome.result).inc()
        if outcome.result != engine.COUNTED:
            log.debug("event %s of %s not counted: %s", item.event.event_id, item.customer_id, outcome.reason)
        return outcome.actions

    def count_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self._metrics.dead_letters.labels(letter.stage).inc()
            self._metrics.events.labels("bad_record" if letter.stage == DECODE_STAGE else "failed").inc()
            log.warning("dead-lettered %s/%d@%d (%s): %s: %s", letter.topic, letter.partition, letter.offset,
                        letter.stage, letter.error_class, letter.error_message[:500])

    # ---- timers ----

    async def fire_due(self, partitions: list[int]) -> list[Action]:
        """Re-evaluate customers whose due time passed, in the given (owned) partitions."""
        fired: list[Action] = []
        async with self._lock:
            for partition in partitions:
                now_ms = self._clock.now_ms()
                due = await self._store.due_customers(partition, now_ms, DUE_BATCH)
                if due:
                    fired += await self._run(TimersWork(self, partition, due))
        return fired

    def apply_due(self, txn: Transaction, partition: int, customer_ids: list[str],
                  policy: Policy) -> tuple[Changes, list[Action]]:
        try:
            return self._apply_due(txn, partition, customer_ids, policy)
        except FatigueError:
            raise
        except Exception as exc:  # the core failed: bisect, never retry in place
            raise CoreFailure(exc) from exc

    def _apply_due(self, txn: Transaction, partition: int, customer_ids: list[str],
                   policy: Policy) -> tuple[Changes, list[Action]]:
        now_ms = self._clock.now_ms()
        changes, actions = Changes(), []
        entries: dict[str, int | None] = {}
        for customer_id in customer_ids:
            state = txn.states.get(customer_id)
            if state is None:
                entries[customer_id] = None
                continue
            actions += self._decide(state, timeline.advance(state, now_ms, policy), now_ms)
            changes.states[customer_id] = state
            entries[customer_id] = self._fire_at(state, policy, now_ms, arrived=False)
            changes.snapshots[customer_id] = snapshot(state, now_ms, policy, next_due=entries[customer_id])
            changes.lists[customer_id] = list_entry_of(state)
        changes.due[partition] = entries
        return changes, actions

    async def postpone_timer(self, partition: int, customer_id: str, cause: BaseException) -> None:
        self._metrics.timer_failures.inc()
        log.error("due timer of %s failed (%s: %s); trying again in an hour", customer_id, type(cause).__name__,
                  str(cause)[:500])
        await self._store.postpone(partition, customer_id, self._clock.now_ms() + TIMER_RETRY_MS)

    def count_actions(self, actions: list[Action]) -> None:
        for action in actions:
            self._metrics.actions.labels(action["type"]).inc()
            log.info("action %s %s for %s: %s", action["action_id"], action["type"], action["customer_id"],
                     action["suggestion"])

    def count_timers(self, fired: int) -> None:
        self._metrics.timers_fired.inc(fired)


class RecordsWork:
    """A slice of a batch of records, processed in order in one transaction."""

    def __init__(self, processor: Processor, items: list[Item]) -> None:
        self._p = processor
        self.items = items
        self.size = len(items)

    def split(self) -> tuple[Work, Work]:
        mid = len(self.items) // 2
        return RecordsWork(self._p, self.items[:mid]), RecordsWork(self._p, self.items[mid:])

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        customers = {i.decoded.customer_id for i in self.items if i.decoded is not None}
        tps = {tp_field(i.record.topic, i.record.partition) for i in self.items}
        txn = await self._p.read(customers, tps)
        try:
            changes, actions, letters = self._p.apply_all(txn, self.items, policy)
            if not commit:
                await txn.abort()
                return actions
            await self._p.commit(txn, changes, actions, letters)
        except BaseException:
            await txn.abort()
            raise
        self._p.count_letters(letters)
        self._p.count_actions(actions)
        return actions

    async def give_up(self, cause: BaseException) -> list[Action]:
        dead = [replace(item, decoded=None, error=cause, stage=PROCESS_STAGE) for item in self.items]
        return await RecordsWork(self._p, dead).run(self._p.policy_in_force(), commit=True)


class TimersWork:
    """Due customers of one partition, re-evaluated in one transaction."""

    def __init__(self, processor: Processor, partition: int, customer_ids: list[str]) -> None:
        self._p = processor
        self.partition = partition
        self.customer_ids = customer_ids
        self.size = len(customer_ids)

    def split(self) -> tuple[Work, Work]:
        mid = len(self.customer_ids) // 2
        return (TimersWork(self._p, self.partition, self.customer_ids[:mid]),
                TimersWork(self._p, self.partition, self.customer_ids[mid:]))

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        txn = await self._p.read(set(self.customer_ids), set())
        try:
            changes, actions = self._p.apply_due(txn, self.partition, self.customer_ids, policy)
            if not commit:
                await txn.abort()
                return actions
            await self._p.commit(txn, changes, actions, [])
        except BaseException:
            await txn.abort()
            raise
        self._p.count_timers(len(self.customer_ids))
        self._p.count_actions(actions)
        return actions

    async def give_up(self, cause: BaseException) -> list[Action]:
        [customer_id] = self.customer_ids
        await self._p.postpone_timer(self.partition, customer_id, cause)
        return []

