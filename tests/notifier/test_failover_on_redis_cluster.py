"""The notifier on a real Redis Cluster: kill -9 a primary under load, a replica is promoted, the
notifier comes back (restarted as its supervisor would), and every action reaches the receiver.

Actions are published at a steady rate; a third of the way in, the primary serving delivery shard 0
is killed. The notifier exits on the store outage (as documented) and is started again in a loop;
the killed node is started again once its replica took over (it rejoins as a replica: the promoted
primary needs one before WAIT lets the notifier commit again). Webhooks are at least once: a
delivery sent just before the kill may be sent again after it; the test reports and bounds those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from notifier.app import run
from notifier.signing import webhook_id
from services.actions import Action, encode_action
from services.delivery.subscriptions import SubscriptionStore
from services.kafka import make_producer
from services.names import ACTION_THROTTLE
from services.redisio import make_redis_for
from services.settings import CommonSettings, NotifierSettings
from tests.notifier.helpers import make_action
from tests.notifier.receivers import serving_on_loopback
from tests.redis_cluster import ClusterNode, RedisClusterProcesses

pytestmark = pytest.mark.integration

ACTIONS = 240
RATE_PER_S = 40.0
KILL_AFTER = ACTIONS // 3
DELIVERED_WITHIN_S = 150.0
log = logging.getLogger(__name__)


class Hits:
    """What the receiver got: webhook-id of every request (answered 200)."""

    def __init__(self) -> None:
        self.webhook_ids: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.webhook_ids[request.headers["webhook-id"]] += 1
        return web.Response(status=200)


@contextlib.asynccontextmanager
async def notifier_kept_running(settings: NotifierSettings) -> AsyncIterator[list[str]]:
    """`run` restarted whenever it ends with an error, as `fatigue up` / Kubernetes restart the process;
    yields the errors it ended with."""
    stop, errors = asyncio.Event(), []

    async def supervise() -> None:
        while not stop.is_set():
            try:
                await run(settings, stop, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                          rebalance_timeout_ms=5000)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    task = asyncio.create_task(supervise())
    try:
        yield errors
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_a_primary_killed_under_load_loses_no_action(
    common_settings: CommonSettings, redis_cluster: RedisClusterProcesses, unique: str
) -> None:
    settings = NotifierSettings(**{
        **common_settings.model_dump(), "redis_url": redis_cluster.url, "redis_wait_timeout_ms": 1000,
        "notifier_group_id": f"notifier-{unique}", "allow_loopback_destinations": True,
        "retry_schedule_s": [0, 0.5, 1, 2, 2, 2, 2, 2, 2, 2], "delivery_timeout_s": 2.0})
    assert settings.wait_replicas == 1  # the default on a Cluster
    hits = Hits()
    redis = make_redis_for(settings.redis_url)
    async with serving_on_loopback(hits.handle) as url:
        sub = await SubscriptionStore(redis, settings.keys).create(url, [ACTION_THROTTLE])
        actions = [make_action(f"act_{unique}_{i:04}", customer_id=f"cust-{i % 50}") for i in range(ACTIONS)]
        async with notifier_kept_running(settings) as errors:
            started = time.monotonic()
            victim = await _publish_and_kill(settings, actions, redis_cluster)
            deadline = time.monotonic() + DELIVERED_WITHIN_S
            while len(hits.webhook_ids) < ACTIONS and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            took_s = time.monotonic() - started
    await redis.aclose()
    sent_again = {wid: n for wid, n in hits.webhook_ids.items() if n > 1}
    log.warning("failover of %s: all delivered %.1fs after the first publish (%.1fs of publishing); %d notifier "
                "restarts (%s); %d deliveries sent more than once", victim, took_s, ACTIONS / RATE_PER_S,
                len(errors), errors[:3], len(sent_again))
    assert set(hits.webhook_ids) == {webhook_id(a["action_id"], sub.id) for a in actions}, (
        f"{ACTIONS - len(hits.webhook_ids)} actions never delivered; notifier errors: {errors[:5]}")
    assert len(sent_again) <= settings.delivery_concurrency  # at least once: only those in flight at the kill


async def _publish_and_kill(settings: NotifierSettings, actions: list[Action], cluster: RedisClusterProcesses) -> int:
    """Publish `actions` at RATE_PER_S; after KILL_AFTER, kill -9 the primary of delivery shard 0, then
    start it again once its replica took over (in a thread: those waits block). The port killed."""
    producer = make_producer(settings, "failover-test")
    await producer.start()
    shard_key = settings.keys.deliveries_due(0)
    victim = cluster.primary_of(shard_key)
    try:
        for action in actions[:KILL_AFTER]:
            await _send(producer, settings, action)
        cluster.kill_primary_of(shard_key)
        revived = asyncio.create_task(asyncio.to_thread(_fail_over_then_revive, cluster, shard_key, victim))
        for action in actions[KILL_AFTER:]:
            await _send(producer, settings, action)
        await revived
    finally:
        await producer.stop()
    return victim.port


async def _send(producer: Any, settings: NotifierSettings, action: Action) -> None:
    await producer.send_and_wait(settings.actions_topic, encode_action(action), key=action["customer_id"].encode())
    await asyncio.sleep(1 / RATE_PER_S)


def _fail_over_then_revive(cluster: RedisClusterProcesses, key: str, victim: ClusterNode) -> None:
    cluster.wait_failed_over(key)
    cluster.revive(victim)
