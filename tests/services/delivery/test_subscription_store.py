"""SubscriptionStore against a real Redis and a real Redis Cluster: create with options, atomic update
and secret rotation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.delivery.subscriptions import Filters, SubscriptionStore
from services.names import SECRET_PREFIX
from services.redisio import RedisClient
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every Redis test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def store(redis_client: RedisClient, redis_target: RedisTarget) -> SubscriptionStore:
    return SubscriptionStore(redis_client, redis_target.keys)


class TestSubscriptionStore:
    async def test_create_keeps_every_option(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"], format="feishu", secret="bot-secret-1",
                                 filters={"tiers": ["A"]}, rate_limit_per_minute=30, description="sales floor")
        assert await store.get(sub.id) == sub
        assert (sub.secret, sub.filters, sub.rate_limit_per_minute) == ("bot-secret-1", Filters(tiers=["A"]), 30)
        generated = await store.create("https://x.test/h", ["fatigue.throttle"])
        assert generated.secret.startswith(SECRET_PREFIX) and generated.format == "standard"

    async def test_update_changes_only_what_is_given(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"], description="old")
        updated = await store.update(sub.id, {"filters": {"stages": ["lead"]}, "description": None})
        assert updated is not None and updated == await store.get(sub.id)
        assert (updated.filters, updated.description) == (Filters(stages=["lead"]), None)
        assert (updated.url, updated.events, updated.secret, updated.created_at) == (
            sub.url, sub.events, sub.secret, sub.created_at)

    async def test_update_refuses_fields_that_are_not_updatable(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"])
        with pytest.raises(ValueError, match="secret"):
            await store.update(sub.id, {"secret": "whsec_mine"})
        assert await store.get(sub.id) == sub

    async def test_unknown_id_is_none_and_nothing_is_created(self, store: SubscriptionStore) -> None:
        assert await store.update("sub_nope", {"description": "x"}) is None
        assert await store.rotate_secret("sub_nope", 60, NOW) is None
        assert await store.list() == []

    async def test_rotation_keeps_the_old_secret_for_the_overlap(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"])
        rotated = await store.rotate_secret(sub.id, 3600, NOW)
        assert rotated is not None and rotated == await store.get(sub.id)
        assert rotated.secret != sub.secret and rotated.secret.startswith(SECRET_PREFIX)
        expires_at = (NOW + timedelta(hours=1)).isoformat()
        assert rotated.previous_secrets == [{"secret": sub.secret, "expires_at": expires_at}]
        assert rotated.signing_secrets(NOW) == [rotated.secret, sub.secret]
        assert rotated.signing_secrets(NOW + timedelta(hours=1)) == [rotated.secret]

    async def test_rotation_drops_expired_secrets_and_zero_overlap_keeps_none(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"])
        first = await store.rotate_secret(sub.id, 60, NOW)
        second = await store.rotate_secret(sub.id, 60, NOW + timedelta(minutes=5))
        assert first is not None and second is not None
        assert [p["secret"] for p in second.previous_secrets] == [first.secret]
        third = await store.rotate_secret(sub.id, 0, NOW + timedelta(minutes=5), new_secret="bot-secret-2")
        assert third is not None and third.secret == "bot-secret-2"
        assert third.signing_secrets(NOW + timedelta(minutes=5)) == ["bot-secret-2", first.secret]

    async def test_concurrent_writers_lose_nothing(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"])
        rotations = [store.rotate_secret(sub.id, 3600, NOW) for _ in range(8)]
        updates = [store.update(sub.id, {"rate_limit_per_minute": 10}), store.update(sub.id, {"description": "d"})]
        results = await asyncio.gather(*rotations, *updates)
        final = await store.get(sub.id)
        assert final is not None and (final.rate_limit_per_minute, final.description) == (10, "d")
        current = {r.secret for r in results[:8] if r is not None}
        assert len(current) == 8 and len(final.previous_secrets) == 8  # every rotation applied, none lost
        assert {p["secret"] for p in final.previous_secrets} == {sub.secret} | current - {final.secret}

    async def test_an_update_racing_a_delete_does_not_bring_it_back(self, store: SubscriptionStore) -> None:
        sub = await store.create("https://x.test/h", ["fatigue.throttle"])
        await asyncio.gather(*(store.update(sub.id, {"description": str(i)}) for i in range(5)), store.delete(sub.id))
        assert await store.get(sub.id) is None


async def test_disable_reports_only_the_call_that_disabled_it(store: SubscriptionStore) -> None:
    sub = await store.create("https://x.test/h", ["fatigue.throttle"])
    results = await asyncio.gather(*(store.disable(sub.id, reason=f"failing ({n})", now=NOW) for n in range(5)))
    assert sorted(results) == [False] * 4 + [True]  # five failing deliveries decided it at once: one counts
    disabled = await store.get(sub.id)
    assert disabled is not None and not disabled.enabled and disabled.disabled_at == NOW.isoformat()
    assert await store.disable(sub.id, reason="again") is False
    assert (await store.get(sub.id)).disabled_reason == disabled.disabled_reason  # type: ignore[union-attr]
    assert await store.disable("sub_nope", reason="x") is False
    await store.set_enabled(sub.id, True)
    assert await store.disable(sub.id, reason="failing again") is True
