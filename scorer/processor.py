"""The scorer's edge, one partition at a time: decode records, run the pure core, publish, commit.

The worker owns whole Kafka partitions (docs/architecture.md). For each one it holds the epoch it
claimed, the offsets stored with the partition's state, and — bounded, least recently used first out
(scorer/state_cache.py) — its customers' decoded states as it last committed them. Order of effects
for a batch of one partition's records:

    states: the cache, else the store -> the core, in event time -> publish dead letters, actions and
    the records of other partitions' customers (scorer/reroute.py), wait for acks -> commit states,
    decision views, list entries, due times and offsets in one script call, only if the partition's
    epoch is still ours (scorer/partition_store.py)

A crash between publishing and committing re-publishes the same actions with the same `action_id` on
restart (at-least-once; receivers de-duplicate by id); a crash before publishing loses nothing. A
worker that lost the partition meanwhile (a zombie) has its commit refused (`Fenced`): nothing of it
lands, it drops the partition and its cached states and rejoins its group.

A stream never stops for one record. A record that cannot be decoded, or that the core fails on, goes
to the dead-letter topic with the error (services/deadletter.py) and its offset is committed like any
other, so everything after it goes on. Which record of a batch the core fails on is found by bisecting
the batch (each half processed as its own commit, in order). Before a record is given up, it is tried
once more with the fallback policy: when that works, the policy in force is what fails
(`on_policy_failure` reverts it). A customer whose stored state does not decode has its records
dead-lettered, nobody else's. Only infrastructure errors (Kafka, Redis: retriable FatigueErrors)
propagate, to be retried in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from scorer.clock import Clock
from scorer.core import delivery, timeline
from scorer.core.state import DUE_UNKNOWN, CustomerState
from scorer.core.views import decision_view
from scorer.decoding import DECODE_STAGE, Decoded, Item, Record, decode_batch, in_event_time
from scorer.lists import list_entry_of
from scorer.partition_store import Fenced, PartitionChanges, PartitionStore
from scorer.publisher import ActionPublisher
from scorer.reroute import Misrouted, Rerouting
from scorer.state_cache import CachedCustomer, StateCache
from scorer.state_values import state_of_value, state_value
from services.actions import Action
from services.deadletter import DeadLetter, DeadLetterSink
from services.errors import FatigueError, StoreUnavailable
from services.metrics import ScorerMetrics
from services.policy.model import Policy
from services.stored_values import ValueEncoder

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
DUE_BATCH = 500
PROCESS_STAGE = "scorer.process"
TIMER_RETRY_MS = 3_600_000
"""A customer whose timer the core fails on is tried again this much later."""


class CoreFailure(Exception):
    """The core failed on this work: not an outage, never retried in place (bisected, then set aside)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass
class Owned:
    """A partition this worker owns: the epoch it claimed and the offsets its state reflects."""

    partition: int
    epoch: int
    offsets: dict[str, int] = field(default_factory=dict)
    """topic -> the last offset of this partition whose effects are committed."""
    stream_time_ms: int | None = None
    """The newest event time processed in the partition (its event-time watermark)."""
    received_at_ms: int | None = None
    """When the API received the last event processed (the event lag while the partition is behind)."""
    offsets_unsure: bool = False
    """A commit failed in a way that may have applied it (a timeout, a replica that did not acknowledge):
    the stored offsets are read again before the next batch."""


@dataclass
class Loaded:
    """The customers one piece of work reads, as committed (taken out of the cache or decoded)."""

    customers: dict[str, CachedCustomer] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    """customer_id -> why its stored state does not decode."""
    newest_event_ms: int | None = None
    """The newest event time among the records applied (set by `apply_records`)."""
    received_at_ms: int | None = None
    """When the API received the last of them."""


class Work(Protocol):
    """A unit the processor runs as one commit: a slice of a batch, or due customers."""

    size: int

    def split(self) -> tuple[Work, Work]: ...

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        """Apply the core under `policy`; commit (or, with commit=False, only check it runs).
        Raises CoreFailure when the core fails, retriable FatigueErrors on outages, Fenced."""
        ...

    async def give_up(self, cause: BaseException) -> list[Action]:
        """Set aside a single unit the core cannot process (dead letter / postponed timer)."""
        ...


class Processor:
    def __init__(
        self,
        store: PartitionStore,
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
        encoder: ValueEncoder | None = None,
        cache: StateCache | None = None,
        rerouting: Rerouting | None = None,
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
        self._encoder = encoder or ValueEncoder()
        self._cache = cache if cache is not None else StateCache(10_000)
        self._rerouting = rerouting
        """None: every record is taken to be in its customer's partition (tests, the backtest)."""
        self._owned: dict[int, Owned] = {}
        self._lock = asyncio.Lock()  # batches and timers never interleave

    def policy_in_force(self) -> Policy:
        return self._policy()

    # ---- ownership ----

    async def assign(self, partitions: list[int]) -> dict[int, Owned]:
        """Become the owner of these partitions (their epochs bumped); what each one's state reflects."""
        async with self._lock:
            for partition in partitions:
                claim = await self._store.claim(partition)
                self._cache.forget_partition(partition)
                self._owned[partition] = Owned(partition, claim.epoch, dict(claim.offsets))
                log.info("partition %d claimed (epoch %d, offsets %s)", partition, claim.epoch, claim.offsets)
            return {p: self._owned[p] for p in partitions}

    def revoke(self, partitions: list[int]) -> None:
        """Stop owning these partitions: their cached states go too (a later owner may change them)."""
        for partition in partitions:
            self._owned.pop(partition, None)
            self._cache.forget_partition(partition)

    def owned(self) -> list[int]:
        return sorted(self._owned)

    def owned_partition(self, partition: int) -> Owned | None:
        return self._owned.get(partition)

    def position(self, partition: int, topic: str) -> int | None:
        """The next offset to read of the partition of `topic` (None: from the start)."""
        owned = self._owned.get(partition)
        stored = None if owned is None else owned.offsets.get(topic)
        return None if stored is None else stored + 1

    # ---- batches ----

    async def process(self, partition: int, records: list[Record]) -> list[Action]:
        """One batch of one owned partition's records (events and profiles topics), in order."""
        items = decode_batch(records, self._events_topic, self._profiles_topic)
        self._metrics.batch_records.observe(len(records))
        async with self._lock:
            owned = self._owned.get(partition)
            if owned is None:
                raise Fenced(f"partition {partition} is not owned by this worker")
            with self._metrics.batch_seconds.time():
                return await self._run(RecordsWork(self, owned, items))

    async def _run(self, work: Work) -> list[Action]:
        try:
            return await work.run(self._policy(), commit=True)
        except CoreFailure as failure:
            if work.size > 1:
                first, second = work.split()
                return await self._run(first) + await self._run(second)
            cause = failure.cause
            if await self._policy_to_blame(work, cause):
                return await self._run(work)
            return await work.give_up(cause)

    async def _policy_to_blame(self, work: Work, cause: BaseException) -> bool:
        """True when the fallback policy runs what the policy in force failed on (and it was reverted)."""
        current, fallback = self._policy(), self._fallback_policy()
        if fallback is None or fallback is current or self._on_policy_failure is None:
            return False
        try:
            await work.run(fallback, commit=False)
        except CoreFailure:
            return False
        await self._on_policy_failure(cause)
        return self._policy() is not current

    async def load(self, owned: Owned, customer_ids: set[str]) -> Loaded:
        """The customers as committed: taken out of the cache (a commit puts them back), else decoded
        from the store. A failing attempt thus leaves nothing half-applied behind. After a commit whose
        outcome is unknown, the partition's cached states and offsets are read again from the store."""
        if owned.offsets_unsure:
            owned.offsets = await self._store.offsets(owned.partition, owned.epoch)
            self._cache.forget_partition(owned.partition)
            owned.offsets_unsure = False
        loaded = Loaded()
        missing = []
        for customer_id in customer_ids:
            cached = self._cache.take(customer_id)
            if cached is None:
                missing.append(customer_id)
            else:
                loaded.customers[customer_id] = cached
        self._metrics.state_cache.labels("hit").inc(len(customer_ids) - len(missing))
        self._metrics.state_cache.labels("miss").inc(len(missing))
        stored = await self._store.load(owned.partition, sorted(missing))
        for customer_id, found in stored.items():
            try:
                state = state_of_value(found.state) if found.state is not None else None
            except Exception as exc:  # noqa: BLE001 - any shape a hand-written or corrupt value may have
                loaded.unreadable[customer_id] = f"stored state is unreadable: {type(exc).__name__}: {exc}"
                continue
            loaded.customers[customer_id] = CachedCustomer(owned.partition, state, found.entry)
        return loaded

    def misrouted(self, owned: Owned, item: Item) -> Misrouted | None:
        """The record with its customer's partition, when that is not this one (scorer/reroute.py)."""
        if self._rerouting is None or item.decoded is None:
            return None
        elsewhere = self._rerouting.elsewhere(owned.partition, item.decoded.customer_id)
        return None if elsewhere is None else Misrouted(item.record, elsewhere)

    def apply_records(self, owned: Owned, loaded: Loaded, items: list[Item],
                      policy: Policy) -> tuple[PartitionChanges, list[Action], list[DeadLetter], list[Misrouted]]:
        try:
            return self._apply_records(owned, loaded, items, policy)
        except FatigueError:
            raise
        except Exception as exc:  # the core failed: bisect, never retry in place
            raise CoreFailure(exc) from exc

    def _apply_records(self, owned: Owned, loaded: Loaded, items: list[Item], policy: Policy
                       ) -> tuple[PartitionChanges, list[Action], list[DeadLetter], list[Misrouted]]:
        now_ms = self._clock.now_ms()
        changes, letters, misrouted = PartitionChanges(), [], []
        arrived: dict[str, list[Decoded]] = {}
        """customer -> what this batch brings them, in arrival order (applied below, in event time)."""
        erased: set[str] = set()
        for item in items:
            record = item.record
            if record.offset <= owned.offsets.get(record.topic, -1):
                self._metrics.events.labels("replayed").inc()
                continue
            changes.offsets[record.topic] = max(changes.offsets.get(record.topic, -1), record.offset)
            elsewhere = self.misrouted(owned, item)
            if elsewhere is not None:
                misrouted.append(elsewhere)
                continue
            decoded = item.decoded
            reason = None if decoded is None else loaded.unreadable.get(decoded.customer_id)
            if item.error is not None or reason is not None:
                letters.append(self._letter(item, now_ms, reason))
                continue
            assert decoded is not None
            if decoded.erase:
                arrived.pop(decoded.customer_id, None)  # what came before the erasure is erased with it
                erased.add(decoded.customer_id)
                continue
            erased.discard(decoded.customer_id)
            arrived.setdefault(decoded.customer_id, []).append(decoded)
            if decoded.event is not None:
                loaded.newest_event_ms = max(loaded.newest_event_ms or 0, decoded.event.occurred_at_ms)
                loaded.received_at_ms = decoded.received_at_ms or loaded.received_at_ms
        for customer_id in erased:
            self._erase(customer_id, loaded, changes)
        actions: list[Action] = []
        for customer_id, decoded_items in arrived.items():
            customer = loaded.customers.setdefault(customer_id, CachedCustomer(owned.partition, None, None))
            state = customer.state or CustomerState(customer_id)
            customer.state = state
            made = [a for d in in_event_time(decoded_items) for a in self._apply_one(state, d, policy)]
            if self._settle_ms == 0:  # no settle: the clock fires what is due at once
                made += timeline.advance(state, now_ms, policy)
            newest = max((d.event.occurred_at_ms for d in decoded_items if d.event is not None), default=None)
            actions += self._decide(state, made, now_ms, changes, wait=delivery.is_history(newest, now_ms,
                                                                                             self._settle_ms))
            self._write(customer, policy, now_ms, changes, arrived=True)
        return changes, actions, letters, misrouted

    def _erase(self, customer_id: str, loaded: Loaded, changes: PartitionChanges) -> None:
        found = loaded.customers.pop(customer_id, None)
        changes.erased.add(customer_id)
        changes.entries[customer_id] = (found.entry if found else None, None)
        changes.due[customer_id] = None
        self._metrics.events.labels("erased").inc()
        log.info("customer %s erased (tombstone on the profiles topic)", customer_id)

    def _apply_one(self, state: CustomerState, item: Decoded, policy: Policy) -> list[Action]:
        if item.profile is not None:
            self._metrics.events.labels("profile").inc()
            return timeline.apply_profile(state, item.profile, item.updated_at_ms, policy)
        assert item.event is not None
        outcome = timeline.apply_event(state, item.event, policy)
        self._metrics.events.labels(outcome.result).inc()
        if outcome.result != "counted":
            log.debug("event %s of %s not counted: %s", item.event.event_id, item.customer_id, outcome.reason)
        return outcome.actions

    def _decide(self, state: CustomerState, made: list[Action], now_ms: int, changes: PartitionChanges, *,
                wait: bool = False) -> list[Action]:
        """The one message (at most) the rep gets for what one piece of work made (scorer/core/delivery.py)."""
        decision = delivery.decide(state, made, now_ms, wait=wait)
        for action, reason in decision.withheld:
            self._metrics.actions_withheld.labels(reason).inc()
            log.debug("action %s %s for %s withheld (%s)", action["action_id"], action["type"],
                      action["customer_id"], reason)
        if decision.sent is None:
            return []
        changes.alerts[state.last_producer] += 1
        return [decision.sent]

    def _write(self, customer: CachedCustomer, policy: Policy, now_ms: int, changes: PartitionChanges, *,
               arrived: bool) -> None:
        """What one customer's commit writes: state, decision view, list entry, due time."""
        state = customer.state
        assert state is not None
        customer_id = state.customer_id
        changes.states[customer_id] = state_value(self._encoder, state)
        changes.views[customer_id] = self._encoder.encode(decision_view(state, now_ms, policy))
        entry = list_entry_of(state)
        if entry != customer.entry:
            changes.entries[customer_id] = (customer.entry, entry)
        changes.due[customer_id] = self._fire_at(state, now_ms, arrived=arrived)

    def _fire_at(self, state: CustomerState, now_ms: int, *, arrived: bool) -> int | None:
        """When (processing time) the due-time index fires the customer: `timer_settle` after its next
        due time (in event time), and after its latest arrival — what arrives together is evaluated
        together, and an event that happened before a due time but arrives up to `timer_settle` after
        it is still evaluated before it. At once (a settle on) when a message waits for the customer's
        timeline to catch up."""
        due = state.due_ms
        if due == DUE_UNKNOWN or (state.pending_action is not None and (due is None or due > now_ms)):
            due = now_ms
        if due is None:
            return None
        return (max(due, now_ms) if arrived else due) + self._settle_ms

    def _letter(self, item: Item, now_ms: int, reason: str | None) -> DeadLetter:
        r = item.record
        error = item.error if item.error is not None else ValueError(reason)
        stage = item.stage if item.error is not None else PROCESS_STAGE
        return DeadLetter.of(stage, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                             value=r.value, error=error, failed_at_ms=now_ms, timestamp_ms=r.timestamp_ms)

    async def commit(self, owned: Owned, loaded: Loaded, changes: PartitionChanges, actions: list[Action],
                     letters: list[DeadLetter], misrouted: list[Misrouted] | None = None) -> None:
        """Publish (acks), then commit if the epoch is still ours; then the cache and offsets follow."""
        await self._dead_letters.publish(letters)
        await self._publisher.publish(actions)
        if misrouted and self._rerouting is not None:
            await self._rerouting.router.reroute(misrouted)
        if changes:
            try:
                await self._store.commit(owned.partition, owned.epoch, changes)
            except StoreUnavailable:
                owned.offsets_unsure = True
                raise
        owned.offsets.update(changes.offsets)
        if misrouted and self._rerouting is not None:
            self._rerouting.done(owned.partition, misrouted, self._clock.now_ms())
        _note_times(owned, loaded)
        for customer_id, customer in loaded.customers.items():
            if customer_id not in changes.erased:
                customer.entry = changes.entries.get(customer_id, (None, customer.entry))[1]
                self._cache.put(customer_id, customer)

    def count_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self._metrics.dead_letters.labels(letter.stage).inc()
            self._metrics.events.labels("bad_record" if letter.stage == DECODE_STAGE else "failed").inc()
            log.warning("dead-lettered %s/%d@%d (%s): %s: %s", letter.topic, letter.partition, letter.offset,
                        letter.stage, letter.error_class, letter.error_message[:500])

    def count_actions(self, actions: list[Action]) -> None:
        for action in actions:
            self._metrics.actions.labels(action["type"]).inc()
            log.info("action %s %s for %s: %s", action["action_id"], action["type"], action["customer_id"],
                     action["suggestion"])

    # ---- timers ----

    def timer_bound_ms(self, partition: int, now_ms: int, *, behind: bool = False) -> int:
        """How far (in event time) the clock may fire a partition's timers: `timer_settle` before now,
        so that an event arriving up to that late is evaluated before a timer due after it happened;
        while the partition is `behind` (a backlog waiting to be read), no further than its event-time
        watermark (the newest event time processed there) less the same, so that a timer never fires
        ahead of events that happened before it and are still to be read."""
        owned = self._owned.get(partition)
        if owned is None:
            return 0
        bound = now_ms if not behind or owned.stream_time_ms is None else min(now_ms, owned.stream_time_ms)
        return bound - self._settle_ms

    async def fire_due(self, partition: int, *, behind: bool = False) -> list[Action]:
        """Advance the customers of an owned partition whose timers fire by now, each up to the
        partition's `timer_bound_ms` (`behind`: the partition has records waiting to be read)."""
        async with self._lock:
            owned = self._owned.get(partition)
            if owned is None:
                return []
            now_ms = self._clock.now_ms()
            until = self.timer_bound_ms(partition, now_ms, behind=behind)
            due = await self._store.due(partition, now_ms, DUE_BATCH)
            if not due:
                return []
            return await self._run(TimersWork(self, owned, due, until, now_ms))

    def apply_due(self, owned: Owned, loaded: Loaded, customer_ids: list[str], until_ms: int, now_ms: int,
                  policy: Policy) -> tuple[PartitionChanges, list[Action]]:
        try:
            return self._apply_due(owned, loaded, customer_ids, until_ms, now_ms, policy)
        except FatigueError:
            raise
        except Exception as exc:  # the core failed: bisect, never retry in place
            raise CoreFailure(exc) from exc

    def _apply_due(self, owned: Owned, loaded: Loaded, customer_ids: list[str], until_ms: int, now_ms: int,
                   policy: Policy) -> tuple[PartitionChanges, list[Action]]:
        changes, actions = PartitionChanges(), []
        for customer_id in customer_ids:
            customer = loaded.customers.get(customer_id)
            if customer is None or customer.state is None:
                changes.due[customer_id] = None  # erased, or unreadable: not a timer to fire
                continue
            state = customer.state
            actions += self._decide(state, timeline.advance(state, until_ms, policy), until_ms, changes)
            self._write(customer, policy, now_ms, changes, arrived=False)
        return changes, actions

    async def postpone_timer(self, owned: Owned, customer_id: str, cause: BaseException) -> None:
        self._metrics.timer_failures.inc()
        log.error("due timer of %s failed (%s: %s); trying again in an hour", customer_id, type(cause).__name__,
                  str(cause)[:500])
        changes = PartitionChanges(due={customer_id: self._clock.now_ms() + TIMER_RETRY_MS})
        await self._store.commit(owned.partition, owned.epoch, changes)

    def count_fenced(self) -> None:
        self._metrics.fenced.inc()

    def count_timers(self, fired: int) -> None:
        self._metrics.timers_fired.inc(fired)


def _note_times(owned: Owned, loaded: Loaded) -> None:
    """The partition's event-time watermark and the arrival of its latest event, after a commit."""
    if loaded.newest_event_ms is not None:
        owned.stream_time_ms = max(owned.stream_time_ms or loaded.newest_event_ms, loaded.newest_event_ms)
    if loaded.received_at_ms is not None:
        owned.received_at_ms = loaded.received_at_ms


class RecordsWork:
    """A slice of a batch of one partition's records, processed in order as one commit."""

    def __init__(self, processor: Processor, owned: Owned, items: list[Item]) -> None:
        self._p = processor
        self.owned = owned
        self.items = items
        self.size = len(items)

    def split(self) -> tuple[Work, Work]:
        mid = len(self.items) // 2
        return RecordsWork(self._p, self.owned, self.items[:mid]), RecordsWork(self._p, self.owned, self.items[mid:])

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        customers = {i.decoded.customer_id for i in self.items
                     if i.decoded is not None and self._p.misrouted(self.owned, i) is None}
        loaded = await self._p.load(self.owned, customers)
        changes, actions, letters, misrouted = self._p.apply_records(self.owned, loaded, self.items, policy)
        if not commit:
            return actions
        await self._p.commit(self.owned, loaded, changes, actions, letters, misrouted)
        self._p.count_letters(letters)
        self._p.count_actions(actions)
        return actions

    async def give_up(self, cause: BaseException) -> list[Action]:
        dead = [replace(item, decoded=None, error=cause, stage=PROCESS_STAGE) for item in self.items]
        return await RecordsWork(self._p, self.owned, dead).run(self._p.policy_in_force(), commit=True)


class TimersWork:
    """Due customers of one partition, advanced to `until_ms` (in event time) as one commit at `now_ms`."""

    def __init__(self, processor: Processor, owned: Owned, customer_ids: list[str], until_ms: int,
                 now_ms: int) -> None:
        self._p = processor
        self.owned = owned
        self.customer_ids = customer_ids
        self.until_ms = until_ms
        self.now_ms = now_ms
        self.size = len(customer_ids)

    def split(self) -> tuple[Work, Work]:
        mid = len(self.customer_ids) // 2
        return (TimersWork(self._p, self.owned, self.customer_ids[:mid], self.until_ms, self.now_ms),
                TimersWork(self._p, self.owned, self.customer_ids[mid:], self.until_ms, self.now_ms))

    async def run(self, policy: Policy, *, commit: bool) -> list[Action]:
        loaded = await self._p.load(self.owned, set(self.customer_ids))
        if loaded.unreadable:
            raise CoreFailure(ValueError(next(iter(loaded.unreadable.values()))))
        changes, actions = self._p.apply_due(self.owned, loaded, self.customer_ids, self.until_ms, self.now_ms,
                                             policy)
        if not commit:
            return actions
        await self._p.commit(self.owned, loaded, changes, actions, [])
        self._p.count_timers(len(self.customer_ids))
        self._p.count_actions(actions)
        return actions

    async def give_up(self, cause: BaseException) -> list[Action]:
        [customer_id] = self.customer_ids
        await self._p.postpone_timer(self.owned, customer_id, cause)
        return []
