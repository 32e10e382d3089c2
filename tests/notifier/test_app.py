"""The notifier end to end: real Tansu broker, real redis-server, a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from fatigue.embedded import free_port
from notifier.app import run
from notifier.signing import webhook_id
from services import deadletter
from services.actions import Action, encode_action
from services.deadletter import decode_dead_letter
from services.delivery.store import DeliveryRecord, DeliveryStore
from services.delivery.subscriptions import Subscription, SubscriptionStore
from services.kafka import make_producer
from services.names import ACTION_RECOVERED, ACTION_THROTTLE
from services.settings import CommonSettings, NotifierSettings
from tests.notifier.helpers import make_action
from tests.notifier.receivers import serving_on_loopback, signature_verifies

pytestmark = pytest.mark.integration

WAIT_S = 30.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """A webhook endpoint that checks signatures with the reference library; answers from `script`."""

    url: str = ""
    secret: str = ""
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0
    arrived: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        headers = dict(request.headers)
        verified = signature_verifies(self.secret, body, headers)
        status = self.script.pop(0) if self.script else 200
        self.received.append(Received(headers, body, verified, status))
        return web.Response(status=status)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.json["type"] == event_type]

    def for_action(self, action: Action) -> list[Received]:
        return [r for r in self.received if r.json["data"]["action_id"] == action["action_id"]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as rec:
        yield rec


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        return await rec.handle(request)  # looked up per request: a test may wrap it

    async with serving_on_loopback(handle) as url:
        rec.url = url
        yield rec


@pytest.fixture
def notifier_settings(common_settings: CommonSettings, unique: str) -> NotifierSettings:
    return NotifierSettings(
        **common_settings.model_dump(),
        notifier_group_id=f"notifier-{unique}",
        allow_loopback_destinations=True,
        retry_schedule_s=[0, 0.2, 0.2],
        delivery_timeout_s=2.0,
    )


@pytest.fixture
async def subscription(redis_client: Redis, notifier_settings: NotifierSettings, receiver: Receiver) -> Subscription:
    store = SubscriptionStore(redis_client, notifier_settings.keys)
    sub = await store.create(receiver.url, [ACTION_THROTTLE, ACTION_RECOVERED])
    receiver.secret = sub.secret
    return sub


@contextlib.asynccontextmanager
async def running(
    settings: NotifierSettings, registry: CollectorRegistry | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(settings, stop, registry=registry,  # short group timeouts: Tansu joins slowly otherwise
            session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=5000)
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def wait_until(condition: Callable[[], bool], task: asyncio.Task[None], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if task.done():
            task.result()  # raises the notifier's error
            pytest.fail(f"notifier ended while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S}s waiting for {what}")
        await asyncio.sleep(0.05)


async def publish(settings: NotifierSettings, *actions: Action) -> list[TopicPartition]:
    """Publish with acks=all, keyed by customer like the scorer; return (partition, offset) of each."""
    producer = make_producer(settings, "notifier-test")
    await producer.start()
    try:
        placed = []
        for action in actions:
            meta = await producer.send_and_wait(
                settings.actions_topic, encode_action(action), key=action["customer_id"].encode()
            )
            placed.append((TopicPartition(meta.topic, meta.partition), meta.offset))
        return placed  # type: ignore[return-value]
    finally:
        await producer.stop()


async def committed(settings: NotifierSettings, tp: TopicPartition) -> int:
    """The group's committed offset, read by a consumer that does not join the group."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                              group_id=settings.notifier_group_id, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(tp) or -1
    finally:
        await reader.stop()


async def deliver_sentinel(settings: NotifierSettings, receiver: Receiver, task: asyncio.Task[None]) -> None:
    """Publish a recovered action for the same customer and wait for it: everything before it is done."""
    sentinel = make_action(type_=ACTION_RECOVERED)
    await publish(settings, sentinel)
    await wait_until(lambda: bool(receiver.for_action(sentinel)), task, "the sentinel action")


async def test_delivers_one_correctly_signed_throttle(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    settings = notifier_settings.model_copy(update={"metrics_port": free_port()})
    action = make_action()
    [(tp, offset)] = await publish(settings, action)
    async with running(settings) as task:
        await wait_until(lambda: bool(receiver.received), task, "the webhook")
        await deliver_sentinel(settings, receiver, task)
        delivered = 'fatigue_notifier_deliveries_total{format="standard",outcome="delivered"} 2.0'
        async with httpx.AsyncClient() as client:
            # the receiver has the sentinel before the notifier has counted it: poll, bounded
            deadline = time.monotonic() + WAIT_S
            while delivered not in (metrics := (await client.get(
                    f"http://127.0.0.1:{settings.metrics_port}/metrics")).text) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    [got] = receiver.of_type(ACTION_THROTTLE)
    assert got.verified
    assert got.json == {"type": ACTION_THROTTLE, "timestamp": action["at"], "data": action}
    assert got.headers["webhook-id"] == webhook_id(action["action_id"], subscription.id)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "contact-fatigue-notifier/0.1"
    key = settings.keys.delivered(action["action_id"], subscription.id)
    assert 0 < await redis_client.ttl(key) <= settings.delivered_ttl_s
    assert await committed(settings, tp) >= offset + 1
    assert delivered in metrics


async def test_retries_5xx_and_delivers_once(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    receiver.script = [500, 500]  # then 200
    action = make_action()
    await publish(notifier_settings, action)
    registry = CollectorRegistry()
    async with running(notifier_settings, registry) as task:
        await wait_until(lambda: len(receiver.received) >= 3, task, "three attempts")
        await deliver_sentinel(notifier_settings, receiver, task)
    attempts = receiver.for_action(action)
    assert [r.status for r in attempts] == [500, 500, 200]
    assert all(r.verified for r in attempts)
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    assert await redis_client.exists(notifier_settings.keys.delivered(action["action_id"], subscription.id))
    record = await store_of(redis_client, notifier_settings).get(webhook_id(action["action_id"], subscription.id))
    assert record is not None and (record.status, record.attempts, record.last_status) == ("delivered", 3, 200)
    assert registry.get_sample_value("fatigue_notifier_retries_total") == 2


async def test_permanent_4xx_is_not_retried(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    receiver.script = [400]
    action = make_action()
    await publish(notifier_settings, action)
    async with running(notifier_settings) as task:
        await wait_until(lambda: bool(receiver.received), task, "the first attempt")
        await deliver_sentinel(notifier_settings, receiver, task)
    assert [r.status for r in receiver.for_action(action)] == [400]
    assert not await redis_client.exists(notifier_settings.keys.delivered(action["action_id"], subscription.id))
    [dead] = await store_of(redis_client, notifier_settings).list("failed")
    assert dead.id == webhook_id(action["action_id"], subscription.id)
    assert (dead.status, dead.attempts, dead.last_status) == ("failed", 1, 400)
    assert dead.last_error == "destination answered HTTP 400"


def store_of(redis_client: Redis, settings: NotifierSettings) -> DeliveryStore:
    return DeliveryStore(redis_client, settings.keys)


async def test_a_pending_retry_survives_a_crash_and_is_delivered_once_after_restart(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    settings = notifier_settings.model_copy(update={"retry_schedule_s": [0, 3.0]})
    receiver.script = [503]  # then 200
    action = make_action()
    delivery_id = webhook_id(action["action_id"], subscription.id)
    store = store_of(redis_client, settings)
    await publish(settings, action)

    crashed = asyncio.create_task(run(settings, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                                      rebalance_timeout_ms=5000))
    waiting: list[DeliveryRecord | None] = [None]

    async def poll_record() -> None:
        waiting[0] = await store.get(delivery_id)

    deadline = time.monotonic() + WAIT_S
    while not (waiting[0] is not None and waiting[0].attempts == 1):
        assert time.monotonic() < deadline and not crashed.done(), "no first failed attempt"
        await asyncio.sleep(0.05)
        await poll_record()
    crashed.cancel()  # the retry is due in ~3 s: the process dies before it
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(crashed, timeout=20)
    assert len(receiver.for_action(action)) == 1

    async with running(settings) as task:
        await wait_until(lambda: len(receiver.for_action(action)) == 2, task, "the resumed retry")
        await deliver_sentinel(settings, receiver, task)
        await asyncio.sleep(0.5)  # room for a wrong extra send
    assert [r.status for r in receiver.for_action(action)] == [503, 200]
    assert await redis_client.exists(settings.keys.delivered(action["action_id"], subscription.id))
    record = await store.get(delivery_id)
    assert record is not None and (record.status, record.attempts) == ("delivered", 2)


async def test_a_slow_endpoint_does_not_delay_a_healthy_one(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    async with serving() as slow:
        slow.delay_s = 3.0  # beyond the 2 s delivery timeout
        slow_sub = await SubscriptionStore(redis_client, notifier_settings.keys).create(slow.url, [ACTION_THROTTLE])
        slow.secret = slow_sub.secret
        action = make_action()
        await publish(notifier_settings, action)
        store = store_of(redis_client, notifier_settings)
        async with running(notifier_settings) as task:
            await wait_until(lambda: bool(receiver.for_action(action)), task, "the healthy delivery")
            # the slow endpoint's request is on its way too (both attempts start together; which
            # reaches its server first is the scheduler's business) and its first attempt, which
            # lasts until the 2 s timeout, is still going on: the healthy one did not wait for it
            await wait_until(lambda: slow.arrived >= 1, task, "the slow endpoint's request")
            slow_record = await store.get(webhook_id(action["action_id"], slow_sub.id))
            assert slow_record is not None and (slow_record.status, slow_record.attempts) == ("pending", 0)
    healthy = await store.get(webhook_id(action["action_id"], subscription.id))
    assert healthy is not None and healthy.status == "delivered"


async def test_same_action_published_twice_is_delivered_once(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver
) -> None:
    action = make_action()
    await publish(notifier_settings, action, action)
    registry = CollectorRegistry()
    async with running(notifier_settings, registry) as task:
        await deliver_sentinel(notifier_settings, receiver, task)
    assert len(receiver.for_action(action)) == 1
    duplicate = {"outcome": "duplicate", "format": "standard"}
    assert registry.get_sample_value("fatigue_notifier_deliveries_total", duplicate) == 1


async def test_loopback_destination_is_refused_unless_allowed(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver
) -> None:
    settings = notifier_settings.model_copy(update={"allow_loopback_destinations": False})
    [(tp, offset)] = await publish(settings, make_action())
    registry = CollectorRegistry()
    refused = {"outcome": "refused", "format": "standard"}
    async with running(settings, registry) as task:
        await wait_until(lambda: registry.get_sample_value("fatigue_notifier_deliveries_total", refused) == 1,
                         task, "the refusal")
        deadline = time.monotonic() + WAIT_S
        while await committed(settings, tp) < offset + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert receiver.received == []
    assert await committed(settings, tp) == offset + 1


async def test_bad_record_is_skipped_and_later_actions_still_delivered(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver
) -> None:
    producer = make_producer(notifier_settings, "notifier-test")
    await producer.start()
    try:
        await producer.send_and_wait(notifier_settings.actions_topic, b"{broken", key=b"cust-1")
    finally:
        await producer.stop()
    registry = CollectorRegistry()
    async with running(notifier_settings, registry) as task:
        await deliver_sentinel(notifier_settings, receiver, task)
    assert registry.get_sample_value("fatigue_notifier_bad_records_total") == 1
    reader = AIOKafkaConsumer(notifier_settings.dead_letter_topic, auto_offset_reset="earliest",
                              bootstrap_servers=notifier_settings.kafka_bootstrap_servers)
    await reader.start()
    try:
        batch = await reader.getmany(timeout_ms=5000)
    finally:
        await reader.stop()
    [letter] = [decode_dead_letter(r.value) for records in batch.values() for r in records]
    assert (letter.stage, letter.value, letter.key) == ("notifier.dispatch", b"{broken", b"cust-1")


async def test_an_oversized_bad_record_is_dead_lettered_cut_to_the_bound_and_later_actions_delivered(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver
) -> None:
    """Issue 17 #1 at the notifier: the letter of a ~900 KB record (base64 + metadata: 1.2 MB) was refused
    and taken for an outage, stopping the notifier. The limit is set here on the producers
    (FATIGUE_KAFKA_MAX_REQUEST_BYTES = Kafka's default 1 MiB, aiokafka's `max_request_size`, checked
    before sending): the embedded broker enforces no max.message.bytes."""
    settings = notifier_settings.model_copy(update={"kafka_max_request_bytes": 1_048_576})
    huge = b'{"not": "an action", "pad": "' + b"p" * 900_000 + b'"}'
    producer = make_producer(settings, "notifier-test")
    await producer.start()
    try:
        await producer.send_and_wait(settings.actions_topic, huge, key=b"cust-1")
    finally:
        await producer.stop()
    registry = CollectorRegistry()
    async with running(settings, registry) as task:
        await deliver_sentinel(settings, receiver, task)
    assert registry.get_sample_value("fatigue_notifier_bad_records_total") == 1
    reader = AIOKafkaConsumer(settings.dead_letter_topic, auto_offset_reset="earliest",
                              bootstrap_servers=settings.kafka_bootstrap_servers)
    await reader.start()
    try:
        batch = await reader.getmany(timeout_ms=5000)
    finally:
        await reader.stop()
    [letter] = [decode_dead_letter(r.value) for records in batch.values() for r in records]
    assert (letter.stage, letter.truncated) == ("notifier.dispatch", True)
    assert letter.value == huge[:deadletter.MAX_VALUE_BYTES]
    assert (letter.value_size, letter.value_sha256) == (len(huge), hashlib.sha256(huge).hexdigest())


async def test_main_runs_until_sigterm_and_exits_cleanly(
    infra_env: dict[str, str], common_settings: CommonSettings, unique: str
) -> None:
    env = {**os.environ, **infra_env, "FATIGUE_NOTIFIER_GROUP_ID": f"main-{unique}", "FATIGUE_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from notifier.app import main; main()"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stderr is not None
        started = await asyncio.wait_for(asyncio.to_thread(_read_until, proc.stderr, "notifier consuming"), 30)
        assert started, "the notifier did not report that it started"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _read_until(stream: Any, marker: str) -> bool:
    for line in stream:
        if marker in line:
            return True
    return False


async def test_rate_limit_holds_the_rest_for_the_next_minute(
    notifier_settings: NotifierSettings, subscription: Subscription, receiver: Receiver, redis_client: Redis
) -> None:
    subs = SubscriptionStore(redis_client, notifier_settings.keys)
    await subs.update(subscription.id, {"rate_limit_per_minute": 2})
    actions = [make_action(customer_id=f"cust-{i}") for i in range(4)]
    # The limit counts per clock minute: start well inside one so the test does not straddle two.
    second = time.time() % 60
    if second > 30:
        await asyncio.sleep(61 - second)
    await publish(notifier_settings, *actions)
    registry = CollectorRegistry()
    async with running(notifier_settings, registry) as task:
        await wait_until(lambda: len(receiver.received) >= 2, task, "two deliveries")
        held = {"reason": "rate_limit"}
        await wait_until(lambda: (registry.get_sample_value("fatigue_notifier_deferred_total", held) or 0) >= 2,
                         task, "two deliveries held back")
    assert len(receiver.received) == 2  # the other two wait for the next clock minute
    pending = await store_of(redis_client, notifier_settings).list("pending")
    assert len(pending) == 2
    next_minute_ms = (int(time.time() * 1000) // 60_000 + 1) * 60_000
    assert all(p.last_error == "held back by rate_limit_per_minute" and p.attempts == 0 for p in pending)
    assert all(p.next_attempt_at_ms is not None and p.next_attempt_at_ms <= next_minute_ms for p in pending)
