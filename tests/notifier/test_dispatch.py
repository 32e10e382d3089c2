"""One record to all matching subscriptions, with the in-memory ledger and a scripted sender."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.delivery import DeliveryResult, Outcome
from notifier.dispatch import Dispatcher, redact_url
from notifier.ledger import MemoryLedger
from notifier.signing import webhook_id
from services.actions import Action, encode_action
from services.errors import StoreUnavailable
from services.metrics import NotifierMetrics
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED
from services.subscriptions import Filters, Subscription
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
class ScriptedSender:
    """Answers with `outcomes[sub.id]` (delivered by default); `gates[sub.id]` holds a delivery back."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    async def deliver(self, sub: Subscription, action: Action) -> DeliveryResult:
        self.calls.append((action["action_id"], sub.id))
        if sub.id in self.gates:
            await self.gates[sub.id].wait()
        self.finished.append(sub.id)
        outcome = self.outcomes.get(sub.id, Outcome.DELIVERED)
        return DeliveryResult(sub.id, sub.url, action["action_id"], webhook_id(action["action_id"], sub.id),
                              outcome, attempts=1, status=200 if outcome is Outcome.DELIVERED else 500)


@dataclass
class Setup:
    subs: StaticSubscriptions
    sender: ScriptedSender
    ledger: MemoryLedger
    registry: CollectorRegistry
    dispatcher: Dispatcher

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def setup(*subs: Subscription, sender: ScriptedSender | None = None) -> Setup:
    registry = CollectorRegistry()
    static, ledger, sender = StaticSubscriptions(list(subs)), MemoryLedger(ttl_s=60), sender or ScriptedSender()
    return Setup(static, sender, ledger, registry, Dispatcher(static, ledger, sender, NotifierMetrics(registry)))


async def test_delivers_to_every_matching_subscription_and_marks_them() -> None:
    other = make_subscription("sub_c")
    other.events = [ACTION_RECOVERED]
    s = setup(make_subscription("sub_a"), make_subscription("sub_b"), other)
    action = make_action()
    results = await s.dispatcher.dispatch(encode_action(action))
    assert sorted(r.subscription_id for r in results) == ["sub_a", "sub_b"]
    assert await s.ledger.seen(action["action_id"], "sub_a")
    assert await s.ledger.seen(action["action_id"], "sub_b")
    assert not await s.ledger.seen(action["action_id"], "sub_c")


async def test_same_action_twice_is_delivered_once() -> None:
    s = setup(make_subscription("sub_a"))
    raw = encode_action(make_action())
    assert len(await s.dispatcher.dispatch(raw)) == 1
    assert await s.dispatcher.dispatch(raw) == []
    assert len(s.sender.calls) == 1
    assert s.metric("fatigue_notifier_deliveries_total", outcome="duplicate") == 1


async def test_failed_delivery_is_not_marked_so_a_resend_tries_again() -> None:
    s = setup(make_subscription("sub_a"), sender=ScriptedSender(outcomes={"sub_a": Outcome.FAILED}))
    action = make_action()
    await s.dispatcher.dispatch(encode_action(action))
    assert not await s.ledger.seen(action["action_id"], "sub_a")
    await s.dispatcher.dispatch(encode_action(action))
    assert len(s.sender.calls) == 2


async def test_undelivered_is_logged_with_what_where_why(caplog: pytest.LogCaptureFixture) -> None:
    sub = make_subscription("sub_a", url="https://hooks.example.com/T0KEN/secret-path?key=abc")
    s = setup(sub, sender=ScriptedSender(outcomes={"sub_a": Outcome.FAILED}))
    action = make_action()
    await s.dispatcher.dispatch(encode_action(action))
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    message = record.getMessage()
    for part in (action["action_id"], "sub_a", "https://hooks.example.com", "outcome=failed", "last_status=500"):
        assert part in message
    assert "T0KEN" not in message and "key=abc" not in message


async def test_a_slow_endpoint_does_not_hold_back_the_others() -> None:
    """sub_slow only finishes once sub_fast has finished: sequential delivery would never end."""
    gate = asyncio.Event()
    sender = ScriptedSender(gates={"sub_slow": gate})
    s = setup(make_subscription("sub_slow"), make_subscription("sub_fast"), sender=sender)
    task = asyncio.create_task(s.dispatcher.dispatch(encode_action(make_action())))
    async with asyncio.timeout(5):
        while "sub_fast" not in sender.finished:
            await asyncio.sleep(0.01)
        assert "sub_slow" not in sender.finished
        gate.set()
        results = await task
    assert {r.subscription_id for r in results} == {"sub_slow", "sub_fast"}


async def test_a_test_action_reaches_only_its_subscription_whatever_its_filters() -> None:
    picky = make_subscription("sub_picky")
    picky.filters = Filters(tiers=["C"])  # the sample customer is tier A, and it is a re-engage
    s = setup(make_subscription("sub_a"), picky, make_subscription("sub_b"))
    action = make_action(type_=ACTION_RE_ENGAGE)
    action.update(test=True, subscription_id="sub_picky")
    results = await s.dispatcher.dispatch(encode_action(action))
    assert [r.subscription_id for r in results] == ["sub_picky"]
    assert s.sender.calls == [(action["action_id"], "sub_picky")]


@pytest.mark.parametrize(("test", "delivered"), [(False, []), (True, ["sub_a"])])
async def test_an_addressed_non_test_action_still_respects_events(test: bool, delivered: list[str]) -> None:
    s = setup(make_subscription("sub_a"), make_subscription("sub_b"))
    action = make_action(type_=ACTION_RECOVERED)  # both subscriptions want throttles only
    action.update(subscription_id="sub_a", test=test)
    assert [r.subscription_id for r in await s.dispatcher.dispatch(encode_action(action))] == delivered


async def test_an_action_for_a_deleted_subscription_goes_nowhere() -> None:
    s = setup(make_subscription("sub_a"))
    action = make_action()
    action.update(test=True, subscription_id="sub_gone")
    assert await s.dispatcher.dispatch(encode_action(action)) == []
    assert s.sender.calls == []


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1,2]", b'{"type":"fatigue.unknown","action_id":"a"}',
                                 b'{"type":"fatigue.throttle"}'])
async def test_undecodable_record_is_counted_and_skipped(raw: bytes | None) -> None:
    s = setup(make_subscription("sub_a"))
    assert await s.dispatcher.dispatch(raw, origin="t[0]@5") == []
    assert s.sender.calls == []
    assert s.metric("fatigue_notifier_bad_records_total") == 1


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
