"""DeliveryScheduler on real Redis and real HTTP receivers: circuit breaker, disabling, per-endpoint
concurrency and per-rep digests. Deliveries are scheduled straight into the store (the Kafka side is
covered by test_app.py); the store's clock is driven by the test where windows and circuits need time
to pass, so nothing waits for a real minute."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ingest.routers.subscriptions import sample_digest
from notifier.app import circuit_config, make_scheduler
from notifier.signing import webhook_id
from services.actions import Action
from services.delivery.digests import Window
from services.delivery.health import EndpointHealthStore
from services.delivery.store import DeliveryRecord, DeliveryStore
from services.delivery.subscriptions import DigestLimit, Subscription, SubscriptionStore
from services.metrics import NotifierMetrics
from services.names import ACTION_DIGEST, ACTION_THROTTLE
from services.settings import CommonSettings, NotifierSettings
from tests.notifier.helpers import make_action
from tests.notifier.test_app import Receiver, serving

pytestmark = pytest.mark.integration

WAIT_S = 20.0


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@dataclass
class Harness:
    settings: NotifierSettings
    redis: Redis
    clock: Clock
    registry: CollectorRegistry
    store: DeliveryStore
    subs: SubscriptionStore
    health: EndpointHealthStore

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def subscribe(self, receiver: Receiver, **options: object) -> Subscription:
        sub = await self.subs.create(receiver.url, [ACTION_THROTTLE], **options)
        receiver.secret = sub.secret
        return sub

    async def schedule(self, sub: Subscription, *actions: Action) -> list[str]:
        now_ms = self.store.now_ms()
        return await self.store.schedule(
            DeliveryRecord.new(webhook_id(a["action_id"], sub.id), a, sub.id, now_ms) for a in actions)

    async def record(self, delivery_id: str) -> DeliveryRecord:
        rec = await self.store.get(delivery_id)
        assert rec is not None
        return rec

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.Task[None]]:
        metrics = NotifierMetrics(self.registry)
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            scheduler = make_scheduler(self.settings, self.redis, self.store, client, metrics,
                                       lambda host, port: ["127.0.0.1"])
            stop = asyncio.Event()
            task = asyncio.create_task(scheduler.run(stop))
            try:
                yield task
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=WAIT_S)

    async def wait_until(self, condition: Callable[[], object], task: asyncio.Task[None], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not await _truth(condition()):
            if task.done():
                task.result()
                pytest.fail(f"scheduler ended while waiting for {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {WAIT_S}s waiting for {what}")
            await asyncio.sleep(0.05)


async def _truth(value: object) -> bool:
    return bool(await value) if asyncio.iscoroutine(value) else bool(value)


def make_harness(common_settings: CommonSettings, redis_client: Redis, **overrides: object) -> Harness:
    settings = NotifierSettings(**{
        **common_settings.model_dump(), "allow_loopback_destinations": True, "delivery_timeout_s": 2.0,
        "retry_schedule_s": [0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], "circuit_failure_threshold": 3,
        "circuit_open_s": 0.5, "circuit_open_max_s": 1.0, "scheduler_poll_s": 0.05, **overrides,
    })
    clock = Clock()
    store = DeliveryStore(redis_client, settings.keys, clock=clock)
    health = EndpointHealthStore(redis_client, settings.keys, circuit_config(settings))
    return Harness(settings, redis_client, clock, CollectorRegistry(), store,
                   SubscriptionStore(redis_client, settings.keys), health)


@pytest.fixture
def harness(common_settings: CommonSettings, redis_client: Redis) -> Harness:
    return make_harness(common_settings, redis_client, delivery_concurrency_per_endpoint=1)


def throttles(n: int, rep: str | None = "rep-9") -> list[Action]:
    actions = []
    for i in range(n):
        action = make_action(customer_id=f"cust-{i}")
        action["owner_rep_id"] = rep
        actions.append(action)
    return actions


async def test_consecutive_failures_open_the_circuit_and_a_probe_closes_it(harness: Harness) -> None:
    async with serving() as receiver:
        receiver.script = [500] * 3  # then 200
        sub = await harness.subscribe(receiver)
        ids = await harness.schedule(sub, *throttles(6))
        async with harness.running() as task:
            await harness.wait_until(lambda: harness.metric("fatigue_notifier_circuit_opened_total") == 1, task,
                                     "the circuit to open")
            # held back without attempts while open: the endpoint saw exactly the 3 failures
            assert [r.status for r in receiver.received] == [500, 500, 500]
            health = await harness.health.get(sub.id)
            assert (health.state(), health.consecutive_failures, health.last_status) == ("circuit_open", 3, 500)
            await harness.wait_until(lambda: len(receiver.received) >= 4, task, "the successful probe")
            probed = time.monotonic()
            await harness.wait_until(lambda: len(receiver.received) == 9, task, "the rest")
            # released when the probe succeeded, not at their next re-check (5 s while a probe runs)
            assert time.monotonic() - probed < 3.0
            await harness.wait_until(
                lambda: harness.store.count("delivered"), task, "the delivered records")  # type: ignore[arg-type]
            while await harness.store.count("pending"):
                await asyncio.sleep(0.05)
    assert (await harness.health.get(sub.id)).state() == "healthy"
    assert [r.status for r in receiver.received] == [500] * 3 + [200] * 6  # nothing lost, nothing twice
    assert len({r.headers["webhook-id"] for r in receiver.received if r.status == 200}) == 6
    assert all(r.verified for r in receiver.received)
    assert harness.metric("fatigue_notifier_deferred_total", reason="circuit_open") > 0
    records = [await harness.record(i) for i in ids]
    assert all(rec.status == "delivered" for rec in records)
    assert sum(rec.attempts for rec in records) == 9  # deferrals did not spend attempts


async def test_an_endpoint_failing_too_long_is_disabled_and_its_deliveries_dead_lettered(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    harness = make_harness(common_settings, redis_client, delivery_concurrency_per_endpoint=1,
                           endpoint_disable_after_s=0.5, circuit_failure_threshold=100)
    async with serving() as receiver:
        receiver.script = [500] * 1000
        sub = await harness.subscribe(receiver)
        ids = await harness.schedule(sub, *throttles(3))
        async with harness.running() as task:
            await harness.wait_until(lambda: harness.metric("fatigue_notifier_endpoints_disabled_total") == 1,
                                     task, "the subscription to be disabled")
            await harness.wait_until(lambda: harness.store.count("failed"), task, "dead letters")
            while await harness.store.count("pending"):
                await asyncio.sleep(0.05)
            seen = len(receiver.received)
            await asyncio.sleep(0.3)
            assert len(receiver.received) == seen  # nothing is sent to a disabled endpoint
    disabled = await harness.subs.get(sub.id)
    assert disabled is not None and not disabled.enabled and disabled.disabled_at
    assert disabled.disabled_reason is not None and "without a successful delivery" in disabled.disabled_reason
    assert "HTTP 500" in disabled.disabled_reason
    records = [await harness.record(i) for i in ids]
    assert all(rec.status == "failed" for rec in records)
    assert any(rec.last_error and "the subscription is disabled" in rec.last_error for rec in records)


async def test_per_endpoint_concurrency_caps_a_slow_endpoint_and_a_healthy_one_goes_ahead(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    harness = make_harness(common_settings, redis_client, delivery_concurrency_per_endpoint=2,
                           delivery_timeout_s=5.0)
    async with serving() as slow, serving() as healthy:
        slow.delay_s = 0.6
        in_flight = {"now": 0, "max": 0}
        handle = slow.handle

        async def counting(request):  # type: ignore[no-untyped-def]
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            try:
                return await handle(request)
            finally:
                in_flight["now"] -= 1

        slow.handle = counting  # type: ignore[method-assign]
        slow_sub = await harness.subscribe(slow)
        healthy_sub = await harness.subscribe(healthy)
        await harness.schedule(slow_sub, *throttles(6))
        await harness.schedule(healthy_sub, *throttles(4))
        async with harness.running() as task:
            await harness.wait_until(lambda: len(healthy.received) == 4, task, "the healthy deliveries")
            healthy_done = time.monotonic()
            assert len(slow.received) < 6  # the slow endpoint is still busy: the healthy one did not wait
            await harness.wait_until(lambda: len(slow.received) == 6, task, "the slow deliveries")
            assert time.monotonic() - healthy_done > 0.5
    assert in_flight["max"] == 2
    assert harness.metric("fatigue_notifier_deferred_total", reason="endpoint_busy") > 0


async def test_a_reps_alerts_beyond_the_limit_come_as_one_digest_at_the_window_end(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    harness = make_harness(common_settings, redis_client, delivery_concurrency_per_endpoint=1)
    async with serving() as receiver:
        sub = await harness.subscribe(receiver, digest=DigestLimit(after=2, window_minutes=10))
        storm = throttles(5)
        other_rep = throttles(1, rep="rep-1")
        await harness.schedule(sub, *storm, *other_rep)
        async with harness.running() as task:
            await harness.wait_until(lambda: harness.metric("fatigue_notifier_digested_total", format="standard") == 3,
                                     task, "three alerts folded")
            await harness.wait_until(lambda: len(receiver.received) == 3, task, "the admitted alerts")
            reps = sorted(r.json["data"]["owner_rep_id"] for r in receiver.received)
            assert reps == ["rep-1", "rep-9", "rep-9"]  # the limit counts per rep
            window = Window.at(harness.store.now_ms(), DigestLimit(after=2, window_minutes=10))
            harness.clock.offset_s += (window.end_ms - harness.store.now_ms()) / 1000 + 3  # past its end
            await harness.wait_until(lambda: len(receiver.received) == 4, task, "the digest")
            await asyncio.sleep(0.3)  # room for a wrong second digest
    assert len(receiver.received) == 4
    digest = receiver.received[-1]
    assert digest.verified and digest.json["type"] == ACTION_DIGEST
    data = digest.json["data"]
    assert (data["owner_rep_id"], data["total"], data["omitted"]) == ("rep-9", 3, 0)
    assert data["by_type"] == {ACTION_THROTTLE: 3}
    folded = [a["action_id"] for a in storm if a["action_id"] not in
              {r.json["data"]["action_id"] for r in receiver.received[:3]}]
    assert [item["action_id"] for item in data["items"]] == folded  # in the order they happened
    digest_delivery = webhook_id(data["action_id"], sub.id)
    assert digest.headers["webhook-id"] == digest_delivery
    for action_id in folded:
        rec = await harness.record(webhook_id(action_id, sub.id))
        assert (rec.status, rec.digest_id) == ("digested", digest_delivery)
    sent = await harness.record(digest_delivery)
    assert sent.status == "delivered" and sent.action["total"] == 3  # type: ignore[typeddict-item]


async def test_test_deliveries_and_subscriptions_without_a_limit_are_never_digested(
    harness: Harness
) -> None:
    async with serving() as limited, serving() as unlimited:
        sub = await harness.subscribe(limited, digest=DigestLimit(after=1, window_minutes=10))
        plain = await harness.subscribe(unlimited)
        tests = throttles(3)
        for action in tests:
            action["test"] = True
        await harness.schedule(sub, *tests)
        await harness.schedule(plain, *throttles(3))
        async with harness.running() as task:
            await harness.wait_until(lambda: len(limited.received) == 3 and len(unlimited.received) == 3, task,
                                     "every delivery on its own")
    assert harness.metric("fatigue_notifier_digested_total", format="standard") == 0


async def test_a_sample_digest_goes_out_as_built_in_the_subscriptions_chat_format(harness: Harness) -> None:
    async with serving() as receiver:
        sub = await harness.subscribe(receiver, format="slack", digest=DigestLimit(after=1, window_minutes=10))
        sample = sample_digest(sub.id, datetime.now(UTC))
        await harness.schedule(sub, sample)
        async with harness.running() as task:
            await harness.wait_until(lambda: receiver.received, task, "the sample digest")
    [got] = receiver.received
    assert got.json["blocks"][0]["text"]["text"] == "[Test] 3 more customers need attention for sample-rep"
    assert "2 to pause, 1 to re-engage" in got.json["text"]
    rec = await harness.record(webhook_id(sample["action_id"], sub.id))
    assert rec.status == "delivered" and rec.action == sample  # neither folded nor re-frozen


async def test_429_paces_by_retry_after_without_opening_the_circuit(harness: Harness) -> None:
    async with serving() as receiver:
        receiver.script = [429] * 4  # then 200; the threshold is 3
        sub = await harness.subscribe(receiver)
        [delivery] = await harness.schedule(sub, *throttles(1))
        async with harness.running() as task:
            await harness.wait_until(lambda: len(receiver.received) == 5, task, "the delivery after four 429s")
    assert harness.metric("fatigue_notifier_circuit_opened_total") == 0
    assert (await harness.health.get(sub.id)).state() == "healthy"
    assert (await harness.record(delivery)).attempts == 5


async def test_a_digest_for_a_disabled_subscription_keeps_its_alerts_and_replays_after_enabling(
    harness: Harness,
) -> None:
    limit = DigestLimit(after=1, window_minutes=10)
    async with serving() as receiver:
        sub = await harness.subscribe(receiver, digest=limit)
        await harness.schedule(sub, *throttles(3))
        async with harness.running() as task:
            await harness.wait_until(lambda: harness.metric("fatigue_notifier_digested_total", format="standard") == 2,
                                     task, "two alerts folded")
            await harness.subs.set_enabled(sub.id, False, reason="maintenance")
            window = Window.at(harness.store.now_ms(), limit)
            harness.clock.offset_s += (window.end_ms - harness.store.now_ms()) / 1000 + 3
            await harness.wait_until(lambda: harness.store.count("failed"), task, "the digest dead-lettered")
            [dead] = await harness.store.list("failed")
            assert dead.action["type"] == ACTION_DIGEST and dead.action["total"] == 2  # type: ignore[typeddict-item]
            assert dead.last_error == "the subscription is disabled (maintenance)"
            await harness.subs.set_enabled(sub.id, True)
            assert await harness.store.replay_failed(sub.id) == 1
            await harness.wait_until(lambda: len(receiver.received) == 2, task, "the replayed digest")
    assert receiver.received[-1].json["data"]["total"] == 2


async def test_deliveries_held_during_a_probe_go_out_as_soon_as_it_succeeds(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    harness = make_harness(common_settings, redis_client, delivery_concurrency_per_endpoint=4)
    async with serving() as receiver:
        receiver.delay_s = 0.5  # the probe is still in flight when the others reach the circuit
        sub = await harness.subscribe(receiver)
        long_ago = harness.store.now_ms() - 60_000
        for _ in range(3):  # the circuit opened a minute ago: its open period is over, a probe may go
            await harness.health.record_failure(sub.id, long_ago, status=503, error="destination answered HTTP 503")
        await harness.schedule(sub, *throttles(4))
        started = time.monotonic()
        async with harness.running() as task:
            await harness.wait_until(lambda: len(receiver.received) == 4, task, "all four")
            elapsed = time.monotonic() - started
    assert harness.metric("fatigue_notifier_deferred_total", reason="circuit_open") == 3  # held during the probe
    assert elapsed < 3.0  # released by the probe's success, not at their re-check 5 s later
    assert (await harness.health.get(sub.id)).state() == "healthy"
