"""A subscription whose URL the HTTP client cannot send (stored by hand, past the API's checks) must
fail its own deliveries only: the notifier keeps running and delivers to everyone else."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from notifier.delivery import SenderConfig, WebhookSender
from services.delivery.store import DeliveryStore
from services.delivery.subscriptions import Subscription, SubscriptionStore
from services.metrics import NotifierMetrics
from services.names import ACTION_RECOVERED, ACTION_THROTTLE
from services.settings import NotifierSettings
from tests.helpers import wait_until as poll
from tests.notifier.helpers import make_action
from tests.notifier.test_app import Receiver, notifier_settings, publish, receiver, running, wait_until

pytestmark = pytest.mark.integration
__all__ = ["notifier_settings", "receiver"]  # fixtures


async def test_a_url_with_a_nul_fails_its_deliveries_and_the_notifier_goes_on(
    notifier_settings: NotifierSettings, receiver: Receiver, redis_client: Redis
) -> None:
    store = SubscriptionStore(redis_client, notifier_settings.keys)
    healthy = await store.create(receiver.url, [ACTION_THROTTLE, ACTION_RECOVERED])
    receiver.secret = healthy.secret
    hostile = await store.create("http://127.0.0.1:9/hook", [ACTION_THROTTLE])
    raw = await redis_client.hget(notifier_settings.keys.subscriptions(), hostile.id)
    await redis_client.hset(notifier_settings.keys.subscriptions(), hostile.id,
                            raw.replace("http://127.0.0.1:9/hook", "http://127.0.0.1:9/\\u0000"))
    first, second = make_action(), make_action(type_=ACTION_RECOVERED)
    await publish(notifier_settings, first)
    async with running(notifier_settings) as task:
        await wait_until(lambda: bool(receiver.for_action(first)), task, "the first action at the healthy endpoint")
        deliveries = DeliveryStore(redis_client, notifier_settings.keys)

        async def dead_lettered() -> list:
            return await deliveries.list("failed", limit=10, subscription_id=hostile.id)

        [failed] = await poll(dead_lettered, 30, "the hostile subscription's delivery dead-lettered")
        assert "control or whitespace character" in (failed.last_error or "")
        await publish(notifier_settings, second)
        await wait_until(lambda: bool(receiver.for_action(second)), task, "a later action, after the failure")
        assert not task.done()


async def test_an_attempt_raising_anything_is_a_failed_attempt(notifier_settings: NotifierSettings) -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    class Exploding(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise RuntimeError("a library bug")

    async with httpx.AsyncClient(transport=Exploding()) as client:
        sender = WebhookSender(client, SenderConfig(timeout_s=1, allow_private=True, allow_loopback=True),
                               NotifierMetrics(CollectorRegistry()), resolve=lambda host, port: ["127.0.0.1"])
        sub = Subscription(id="sub_x", url="http://127.0.0.1:9/hook", events=[ACTION_THROTTLE],
                           secret="whsec_" + "A" * 32)
        outcome = await sender.attempt(sub, make_action())
    assert outcome.outcome.value == "failed" and outcome.retriable and "a library bug" in (outcome.error or "")
