"""Digests: the pure pieces, and folding/freezing against a real redis-server and a real Redis Cluster."""

from __future__ import annotations

import json

import pytest

from services.actions import DIGEST_ITEMS_MAX, DigestItem, decode_action
from services.delivery.digests import (
    DUE_GRACE_MS,
    DigestStore,
    Window,
    digest_action_id,
    digest_item,
    empty_digest,
    filled,
    is_frozen,
)
from services.delivery.store import DeliveryStore
from services.delivery.subscriptions import DigestLimit
from services.errors import BadRecord
from services.names import ACTION_DIGEST, ACTION_RE_ENGAGE, ACTION_THROTTLE, RedisKeys
from services.redisio import RedisClient
from tests.conftest import RedisTarget
from tests.notifier.helpers import make_action

LIMIT = DigestLimit(after=2, window_minutes=10)
W0 = 1_700_000_400_000  # a window start: 1_700_000_400_000 is a multiple of 600_000
T0 = W0 + 60_000


def delivery_id_of(digest_action_id: str) -> str:
    return "msg_" + digest_action_id


# ---- pure ----


def test_windows_are_clock_aligned() -> None:
    assert W0 % LIMIT.window_ms == 0
    window = Window.at(T0, LIMIT)
    assert (window.start_ms, window.end_ms) == (W0, W0 + 600_000)
    assert Window.at(W0 + 599_999, LIMIT) == window
    assert Window.at(W0 + 600_000, LIMIT).index == window.index + 1


def test_digest_ids_are_stable_per_subscription_rep_and_window() -> None:
    window = Window.at(T0, LIMIT)
    same = digest_action_id("sub_a", "rep-9", window)
    assert same == digest_action_id("sub_a", "rep-9", Window.at(T0 + 1000, LIMIT))
    others = {digest_action_id("sub_b", "rep-9", window), digest_action_id("sub_a", "rep-8", window),
              digest_action_id("sub_a", "rep-9", Window.at(T0 + 600_000, LIMIT))}
    assert same not in others and len(others) == 3


def test_an_item_keeps_what_the_rep_acts_on() -> None:
    action = make_action("act_1")
    action["pause_until"] = "2026-12-01T00:00:00Z"  # type: ignore[typeddict-unknown-key]
    assert digest_item(action) == {
        "action_id": "act_1", "type": ACTION_THROTTLE, "customer_id": "cust-1", "at": action["at"],
        "suggestion": action["suggestion"], "reasons": action["reasons"], "pause_until": "2026-12-01T00:00:00Z",
    }
    assert "pause_until" not in digest_item(make_action("act_2"))


def test_filled_counts_every_item_and_lists_the_first_fifty() -> None:
    window = Window.at(T0, LIMIT)
    digest = empty_digest("dig_x", "rep-9", window)
    assert not is_frozen(digest)
    assert (digest["type"], digest["at"], digest["window_start"]) == (
        ACTION_DIGEST, "2023-11-14T22:30:00Z", "2023-11-14T22:20:00Z")
    items: list[DigestItem] = [
        digest_item(make_action(f"act_{i}", type_=ACTION_RE_ENGAGE if i % 3 == 0 else ACTION_THROTTLE))
        for i in range(60)
    ]
    full = filled(digest, items)
    assert is_frozen(full)
    assert (full["total"], full["omitted"], len(full["items"])) == (60, 60 - DIGEST_ITEMS_MAX, DIGEST_ITEMS_MAX)
    assert full["by_type"] == {ACTION_RE_ENGAGE: 20, ACTION_THROTTLE: 40}
    assert full["items"][0]["action_id"] == "act_0"


# ---- Redis ----


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every Redis test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def keys(redis_target: RedisTarget) -> RedisKeys:
    return redis_target.keys


@pytest.fixture
def digests(redis_client: RedisClient, keys: RedisKeys) -> DigestStore:
    return DigestStore(redis_client, keys)


@pytest.fixture
def deliveries(redis_client: RedisClient, keys: RedisKeys) -> DeliveryStore:
    return DeliveryStore(redis_client, keys)


async def fold(digests: DigestStore, action_id: str, at_ms: int = T0, rep: str | None = "rep-9",
               sub_id: str = "sub_a") -> str | None:
    action = make_action(action_id)
    action["owner_rep_id"] = rep
    return await digests.fold(sub_id, LIMIT, action, at_ms, delivery_id_of)


@pytest.mark.integration
async def test_the_first_alerts_are_admitted_the_rest_folded_into_one_scheduled_digest(
    digests: DigestStore, deliveries: DeliveryStore
) -> None:
    assert await fold(digests, "act_1") is None
    assert await fold(digests, "act_2") is None
    first = await fold(digests, "act_3")
    assert first is not None and await fold(digests, "act_4", T0 + 1000) == first
    record = await deliveries.get(first)
    window = Window.at(T0, LIMIT)
    assert record is not None and record.status == "pending" and record.subscription_id == "sub_a"
    assert record.next_attempt_at_ms == window.end_ms + DUE_GRACE_MS
    assert record.action["action_id"] == digest_action_id("sub_a", "rep-9", window)
    assert await deliveries.count("pending") == 1  # one digest, however many alerts fold into it
    frozen = await digests.freeze(record.action, record.id)  # type: ignore[arg-type]
    assert [item["action_id"] for item in frozen["items"]] == ["act_3", "act_4"]
    assert frozen["total"] == 2 and frozen["owner_rep_id"] == "rep-9"


@pytest.mark.integration
async def test_folding_is_idempotent_per_action(digests: DigestStore, deliveries: DeliveryStore) -> None:
    await fold(digests, "act_1")
    assert await fold(digests, "act_1") is None  # an admitted alert claimed again stays admitted
    await fold(digests, "act_2")
    digest_delivery = await fold(digests, "act_3")
    assert await fold(digests, "act_3") == digest_delivery  # re-folded after a crash: still one item
    record = await deliveries.get(str(digest_delivery))
    assert record is not None
    assert (await digests.freeze(record.action, record.id))["total"] == 1  # type: ignore[arg-type]


@pytest.mark.integration
async def test_reps_windows_and_subscriptions_are_counted_apart(digests: DigestStore) -> None:
    for i in range(2):
        assert await fold(digests, f"a{i}", rep="rep-1") is None
        assert await fold(digests, f"b{i}", rep=None) is None  # unassigned customers share a bucket
        assert await fold(digests, f"c{i}", sub_id="sub_b") is None
        assert await fold(digests, f"d{i}", at_ms=T0 + 600_000) is None  # next window
    assert await fold(digests, "b2", rep=None) is not None


@pytest.mark.integration
async def test_after_freezing_late_alerts_of_the_window_go_out_on_their_own(
    digests: DigestStore, deliveries: DeliveryStore, redis_client: RedisClient, keys: RedisKeys
) -> None:
    for i in range(3):
        digest_delivery = await fold(digests, f"act_{i}")
    record = await deliveries.get(str(digest_delivery))
    assert record is not None
    frozen = await digests.freeze(record.action, record.id)  # type: ignore[arg-type]
    assert await fold(digests, "act_late", T0 + 2000) is None  # would otherwise be lost
    assert (await digests.freeze(record.action, record.id))["total"] == frozen["total"] == 1  # type: ignore[arg-type]
    items = keys.digest_items(frozen["action_id"], keys.delivery_shard(record.id))
    assert await redis_client.exists(items)
    await digests.forget_items(frozen["action_id"], record.id)
    assert not await redis_client.exists(items)


@pytest.mark.parametrize(
    ("record", "ok"),
    [
        ({"type": ACTION_THROTTLE, "action_id": "a"}, True),
        ({"type": ACTION_DIGEST, "action_id": "d", "test": True}, True),  # a sample from POST …/test
        ({"type": ACTION_DIGEST, "action_id": "d"}, False),  # real digests never travel on the topic
        ({"type": ACTION_DIGEST, "action_id": "d", "test": "yes"}, False),
        ({"type": "fatigue.other", "action_id": "x", "test": True}, False),
        ({"type": ACTION_THROTTLE}, False),
    ],
)
def test_the_actions_topic_carries_actions_and_sample_digests_only(record: dict[str, object], ok: bool) -> None:
    raw = json.dumps(record).encode()
    if ok:
        assert decode_action(raw)["action_id"] == record["action_id"]
    else:
        with pytest.raises(BadRecord, match="lacks a known type or an action_id"):
            decode_action(raw)
