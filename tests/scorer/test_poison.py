"""A stream never stops for one record: poison records go to the dead-letter sink with their reason,
everything else is processed exactly. Real Redis; the Kafka side is an in-memory sink, except for the
action the real broker refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from scorer.clock import ManualClock
from scorer.core import engine
from scorer.decoding import Record
from scorer.partition_store import RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import ActionPublisher, KafkaActionPublisher, MemoryActionPublisher
from scorer.state_values import state_of_value
from services.actions import Action
from services.contract import EventEnvelope, EventIn, encode
from services.deadletter import DeadLetterSink, KafkaDeadLetterSink, MemoryDeadLetterSink, decode_dead_letter
from services.durations import DAY_MS
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import Policy, default_policy
from services.settings import CommonSettings
from tests.ingest.helpers import consume

pytestmark = pytest.mark.integration

EVENTS, PROFILES = "ev", "pr"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def touch(offset: int, customer: str, *, event_id: str | None = None, kind: str = "promo",
          type_: str = "touch", days_ago: float = 1.0) -> Record:
    body = EventIn.model_validate({
        "event_id": event_id or f"e{offset}", "type": type_, "customer_id": customer, "channel": "email",
        "kind": kind, "occurred_at": (NOW - timedelta(days=days_ago, minutes=offset)).isoformat(),
    })
    return Record(EVENTS, 0, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)),
                  key=customer.encode())


class Harness:
    def __init__(self, redis: Redis, prefix: str, policy: Callable[[], Policy] = default_policy) -> None:
        self.redis, self.keys = redis, RedisKeys(prefix)
        self.pkeys = self.keys.partition(0)
        self.letters = MemoryDeadLetterSink()
        self.actions = MemoryActionPublisher()
        self.metrics = ScorerMetrics(CollectorRegistry())
        self.clock = ManualClock(int(NOW.timestamp() * 1000))
        self.policy = policy
        self.fallback: Policy | None = None
        self.refused: list[BaseException] = []
        self.processor = self.make(self.actions, self.letters)

    def make(self, publisher: ActionPublisher, letters: DeadLetterSink) -> Processor:
        return Processor(
            RedisPartitionStore(self.redis, self.keys), publisher, lambda: self.policy(), self.clock, self.metrics,
            events_topic=EVENTS, profiles_topic=PROFILES, dead_letters=letters,
            fallback_policy=lambda: self.fallback, on_policy_failure=self._refuse,
        )

    async def process(self, records: list[Record]) -> list[Action]:
        if not self.processor.owned():
            await self.processor.assign([0])
        return await self.processor.process(0, records)

    async def _refuse(self, cause: BaseException) -> None:
        self.refused.append(cause)
        assert self.fallback is not None
        fallback = self.fallback
        self.policy, self.fallback = (lambda: fallback), None

    async def counted(self, customer: str) -> int:
        raw = await self.redis.hget(self.pkeys.states(), customer)
        return state_of_value(raw).events_counted if raw else 0

    async def committed_offset(self) -> int:
        return int(await self.redis.hget(self.pkeys.offsets(), EVENTS))


POISONS = {
    "not json": b"{not json",
    "no value": None,
    "deep attributes": json.dumps({"v": 1, "producer": "p", "received_at": NOW.isoformat(), "event": {
        "event_id": "x", "type": "touch", "customer_id": "c9", "channel": "email",
        "occurred_at": NOW.isoformat(), "attributes": json.loads('{"a":' * 300 + "1" + "}" * 300)}}).encode(),
    "year 0 in UTC": json.dumps({"v": 1, "producer": "p", "received_at": NOW.isoformat(), "event": {
        "event_id": "x", "type": "touch", "customer_id": "c9", "channel": "email",
        "occurred_at": "0001-01-01T00:00:00+14:00"}}).encode(),
    "wrong shape": b'{"v": 1, "producer": "p"}',
}


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_poison_record_mid_batch_is_dead_lettered_and_the_rest_counted(
    redis_client: Redis, unique: str, poison: str
) -> None:
    h = Harness(redis_client, unique)
    records = [touch(o, f"c{o % 3}") for o in range(9)]
    records.append(Record(EVENTS, 0, 100, POISONS[poison], key=b"c9", timestamp_ms=123))
    records += [touch(o, f"c{o % 3}") for o in range(101, 107)]
    await h.process(records)
    assert [await h.counted(f"c{i}") for i in range(3)] == [5, 5, 5]
    [letter] = h.letters.letters
    assert (letter.stage, letter.offset, letter.value, letter.key, letter.timestamp_ms) == (
        "scorer.decode", 100, POISONS[poison], b"c9", 123)
    assert letter.error_class and letter.error_message
    assert await h.committed_offset() == 106
    assert h.metrics.dead_letters.labels("scorer.decode")._value.get() == 1


async def test_a_record_the_core_fails_on_is_found_by_bisecting(
    redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(redis_client, unique)
    real = engine.apply_event

    def failing(state, event, now_ms, policy):  # type: ignore[no-untyped-def]
        if event.event_id == "poison":
            raise OverflowError("the core cannot run this event")
        return real(state, event, now_ms, policy)

    monkeypatch.setattr(engine, "apply_event", failing)
    records = [touch(o, f"c{o % 4}") for o in range(40)]
    records[23] = touch(23, "c3", event_id="poison")
    await h.process(records)
    assert [await h.counted(f"c{i}") for i in range(4)] == [10, 10, 10, 9]
    [letter] = h.letters.letters
    assert (letter.stage, letter.offset, letter.error_class) == ("scorer.process", 23, "OverflowError")
    assert await h.committed_offset() == 39
    # the batch is not re-read as a whole: replaying it counts nothing twice and letters nothing twice
    await h.process(records)
    assert [await h.counted(f"c{i}") for i in range(4)] == [10, 10, 10, 9]
    assert len(h.letters.letters) == 1


async def test_an_unreadable_stored_state_letters_that_customer_only(redis_client: Redis, unique: str) -> None:
    h = Harness(redis_client, unique)
    await redis_client.hset(h.pkeys.states(), "c1", "{broken")
    await h.process([touch(o, f"c{o % 2}") for o in range(6)])
    assert await h.counted("c0") == 3
    assert [(x.stage, x.offset) for x in h.letters.letters] == [("scorer.process", 1), ("scorer.process", 3),
                                                                ("scorer.process", 5)]
    assert "unreadable" in h.letters.letters[0].error_message


async def test_a_timer_the_core_fails_on_is_postponed_and_the_others_fire(
    redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(redis_client, unique)
    await h.process([touch(o, f"c{o}", days_ago=1) for o in range(4)])
    real = engine.on_due

    def failing(state, now_ms, policy):  # type: ignore[no-untyped-def]
        if state.customer_id == "c2":
            raise ValueError("boom")
        return real(state, now_ms, policy)

    monkeypatch.setattr(engine, "on_due", failing)
    h.clock.advance(31 * DAY_MS)
    fired = await h.processor.fire_due(0)
    assert sorted(a["customer_id"] for a in fired) == ["c0", "c1", "c3"]
    assert h.metrics.timer_failures._value.get() == 1
    due = await redis_client.zscore(h.pkeys.due(), "c2")
    assert due == h.clock.now_ms() + 3_600_000
    assert await h.processor.fire_due(0) == []  # nothing due again right away: no hot loop


async def test_a_policy_the_core_fails_on_is_reverted_and_no_record_is_lost(
    redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The complaint rule of the new policy fails at run time; the previous policy processes the record."""
    bad, good = default_policy(), default_policy()
    real = engine.apply_event

    def failing(state, event, now_ms, policy):  # type: ignore[no-untyped-def]
        if policy is bad and event.kind == "complaint":
            raise ValueError("year 10240 is out of range")
        return real(state, event, now_ms, policy)

    monkeypatch.setattr(engine, "apply_event", failing)
    h = Harness(redis_client, unique, policy=lambda: bad)
    h.fallback = good
    records = [touch(o, "c1") for o in range(3)]
    records.append(touch(3, "c1", type_="response", kind="complaint"))
    records += [touch(o, "c1") for o in range(4, 6)]
    await h.process(records)
    assert await h.counted("c1") == 6
    assert h.letters.letters == []
    assert [str(c) for c in h.refused] == ["year 10240 is out of range"]
    assert h.policy() is good
    assert any(a["type"] == "fatigue.throttle" for a in h.actions.published)  # the complaint throttles


async def test_a_profile_tombstone_erases_the_customer(redis_client: Redis, unique: str) -> None:
    h = Harness(redis_client, unique)
    await h.process([touch(o, "gone") for o in range(3)] + [touch(3, "kept")])
    assert await h.counted("gone") == 3
    assert await redis_client.zscore(h.pkeys.due(), "gone") is not None
    tombstone = Record(PROFILES, 0, 0, None, key=b"gone")
    await h.process([tombstone, touch(4, "kept")])
    assert await redis_client.hget(h.pkeys.states(), "gone") is None
    assert await redis_client.hget(h.pkeys.views(), "gone") is None
    assert await redis_client.zscore(h.pkeys.due(), "gone") is None
    assert await h.counted("kept") == 2
    await h.process([touch(5, "gone")])  # a later event starts afresh
    assert await h.counted("gone") == 1
    assert h.letters.letters == []


async def test_a_tombstone_without_a_usable_key_is_dead_lettered(redis_client: Redis, unique: str) -> None:
    h = Harness(redis_client, unique)
    await h.process([Record(PROFILES, 0, 0, None, key=b"not a valid id!"), touch(1, "c1")])
    assert [letter.offset for letter in h.letters.letters] == [0] and await h.counted("c1") == 1


async def test_an_action_the_actions_topic_refuses_is_dead_lettered_and_the_batch_commits(
    redis_client: Redis, unique: str, common_settings: CommonSettings
) -> None:
    """Issue 17 (errors classified once): an action the brokers refuse for its own size cannot be published
    by retrying; it used to fail the batch as "broker unavailable", retried in place forever, blocking
    the partition. Real broker and Redis. The actions topic's limit is set here on the action producer
    (FATIGUE_KAFKA_MAX_REQUEST_BYTES = 1024, aiokafka's `max_request_size`, checked before sending; the
    embedded broker enforces no max.message.bytes), the dead-letter producer keeps the default 1 MiB."""
    h = Harness(redis_client, unique)
    refused: list[BaseException] = []
    letters = KafkaDeadLetterSink(common_settings, "test-scorer-letters")
    small = common_settings.model_copy(update={"kafka_max_request_bytes": 1024})
    publisher = KafkaActionPublisher(small, letters, on_refused=refused.append)
    h.processor = h.make(publisher, letters)
    long_id = "c" * 200  # its actions are over 1024 bytes as records
    try:
        actions = await h.process([touch(i, long_id) for i in range(13)])
    finally:
        await publisher.close()
        await letters.close()
    assert actions and len(refused) == len(actions)
    assert await h.committed_offset() == 12 and await h.counted(long_id) == 13
    on_topic = await consume(common_settings.kafka_bootstrap_servers, common_settings.dead_letter_topic,
                             expected=len(actions))
    dead = [decode_dead_letter(r.value) for r in on_topic]
    assert {d.stage for d in dead} == {"scorer.publish"} and {d.topic for d in dead} == {common_settings.actions_topic}
    assert sorted(json.loads(d.value or b"")["action_id"] for d in dead) == sorted(a["action_id"] for a in actions)
    assert all("1,024" in d.error_message for d in dead)
