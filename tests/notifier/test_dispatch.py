"""One record to a scheduled delivery per matching subscription, with the in-memory ledger and a recording queue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.dispatch import Dispatcher, redact_url
from notifier.ledger import MemoryLedger
from notifier.signing import webhook_id
from services.actions import encode_action
from services.delivery.store import DeliveryRecord
from services.delivery.subscriptions import Filters, Subscription
from services.errors import BadRecord, StoreUnavailable
from services.metrics import NotifierMetrics
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED
from tests.notifier.helpers import make_action, make_subscription


@dataclass
class StaticSubscriptions:
    subs: list[Subscription]
    broken: bool = False

    async def matching(self, event_type: str) -> list[Subscription]:
        if self.broken:
            raise RedisConnectionError("connection refused")
        return [sub for sub in self.subs if sub.wants(event_type)]

    async def get(self, sub_id: str) -> Subscription | None:
        if self.broken:
            raise RedisConnectionError("connection refused")
        return next((sub for sub in self.subs if sub.id == sub_id), None)


@dataclass
class RecordingQueue:
    """Keeps scheduled records by id; like the Redis store, an id already there is left alone."""

    records: dict[str, DeliveryRecord] = field(default_factory=dict)

    async def schedule(self, records: Iterable[DeliveryRecord]) -> list[str]:
        new = [rec for rec in records if rec.id not in self.records]
        self.records.update((rec.id, rec) for rec in new)
        return [rec.id for rec in new]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(rec.action["action_id"], rec.subscription_id) for rec in self.records.values()]


@dataclass
class Setup:
    subs: StaticSubscriptions
    queue: RecordingQueue
    ledger: MemoryLedger
    registry: CollectorRegistry
    dispatcher: Dispatcher
    wakes: list[int] = field(default_factory=list)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def setup(*subs: Subscription) -> Setup:
    registry = CollectorRegistry()
    static, ledger, queue = StaticSubscriptions(list(subs)), MemoryLedger(ttl_s=60), RecordingQueue()
    wakes: list[int] = []
    dispatcher = Dispatcher(static, ledger, queue, NotifierMetrics(registry), clock=lambda: 1000.0,
                            on_scheduled=lambda: wakes.append(len(queue.records)))
    return Setup(static, queue, ledger, registry, dispatcher, wakes)


async def test_schedules_one_pending_delivery_per_matching_subscription() -> None:
    other = make_subscription("sub_c")
    other.events = [ACTION_RECOVERED]
    s = setup(make_subscription("sub_a"), make_subscription("sub_b"), other)
    action = make_action()
    scheduled = await s.dispatcher.dispatch(encode_action(action))
    assert sorted(scheduled) == sorted(webhook_id(action["action_id"], sub) for sub in ("sub_a", "sub_b"))
    rec = s.queue.records[webhook_id(action["action_id"], "sub_a")]
    assert (rec.status, rec.attempts, rec.next_attempt_at_ms, rec.action) == ("pending", 0, 1_000_000, action)


async def test_same_action_twice_is_scheduled_once() -> None:
    s = setup(make_subscription("sub_a"))
    raw = encode_action(make_action())
    assert len(await s.dispatcher.dispatch(raw)) == 1
    assert await s.dispatcher.dispatch(raw) == []
    assert len(s.queue.records) == 1
    assert s.wakes == [1]  # the scheduler is woken once the new delivery is stored, not for the duplicate
    assert s.metric("fatigue_notifier_deliveries_total", outcome="duplicate", format="standard") == 1


async def test_a_pair_in_the_ledger_is_not_scheduled_again() -> None:
    s = setup(make_subscription("sub_a"), make_subscription("sub_b"))
    action = make_action()
    await s.ledger.mark(action["action_id"], "sub_a")
    await s.dispatcher.dispatch(encode_action(action))
    assert s.queue.pairs == [(action["action_id"], "sub_b")]
    assert s.metric("fatigue_notifier_deliveries_total", outcome="duplicate", format="standard") == 1


async def test_a_test_action_reaches_only_its_subscription_whatever_its_filters() -> None:
    picky = make_subscription("sub_picky")
    picky.filters = Filters(tiers=["C"])  # the sample customer is tier A, and it is a re-engage
    s = setup(make_subscription("sub_a"), picky, make_subscription("sub_b"))
    action = make_action(type_=ACTION_RE_ENGAGE)
    action.update(test=True, subscription_id="sub_picky")
    await s.dispatcher.dispatch(encode_action(action))
    assert s.queue.pairs == [(action["action_id"], "sub_picky")]


@pytest.mark.parametrize(("test", "delivered"), [(False, []), (True, ["sub_a"])])
async def test_an_addressed_non_test_action_still_respects_events(test: bool, delivered: list[str]) -> None:
    s = setup(make_subscription("sub_a"), make_subscription("sub_b"))
    action = make_action(type_=ACTION_RECOVERED)  # both subscriptions want throttles only
    action.update(subscription_id="sub_a", test=test)
    await s.dispatcher.dispatch(encode_action(action))
    assert [sub for _, sub in s.queue.pairs] == delivered


async def test_an_action_for_a_deleted_subscription_goes_nowhere() -> None:
    s = setup(make_subscription("sub_a"))
    action = make_action()
    action.update(test=True, subscription_id="sub_gone")
    assert await s.dispatcher.dispatch(encode_action(action)) == []
    assert s.queue.records == {}


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1,2]", b'{"type":"fatigue.unknown","action_id":"a"}',
                                 b'{"type":"fatigue.throttle"}'])
async def test_undecodable_record_is_refused_and_nothing_scheduled(raw: bytes | None) -> None:
    s = setup(make_subscription("sub_a"))
    with pytest.raises(BadRecord):  # the consumer dead-letters it
        await s.dispatcher.dispatch(raw, origin="t[0]@5")
    assert s.queue.records == {}


async def test_unreadable_subscriptions_raise_store_unavailable() -> None:
    s = setup(make_subscription("sub_a"))
    s.subs.broken = True
    with pytest.raises(StoreUnavailable):
        await s.dispatcher.dispatch(encode_action(make_action()))


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com"),
        ("http://user:pw@example.com:8080/p?q=1", "http://example.com:8080"),
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
