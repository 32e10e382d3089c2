"""Alert storms: per owner rep, alerts beyond a subscription's limit are folded into one digest.

Within each clock-aligned window of `DigestLimit.window_minutes`, the first `after` alerts for one
rep on one subscription are *admitted* (sent on their own); every later one is *folded*: its item
is added to the window's digest, whose delivery is scheduled (once) for the end of the window,
and the alert's own delivery is marked `digested` (pointing at the digest) instead of sent.

When the digest comes due the scheduler *freezes* it: the window's items are written into the
digest delivery (so every retry sends the same body) and a marker makes any alert still folding
into that window go out on its own instead (it would otherwise miss the digest). All steps are
idempotent by action id: a notifier that dies mid-way and is run again folds, freezes and sends
each alert once.

A window's bookkeeping (admitted set, items, frozen marker) lives in the shard of the window's
digest delivery (services/names.py), so the fold script's keys, the digest's record and the due set
it is scheduled in share one slot on a Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.actions import DIGEST_ITEMS_MAX, Action, Digest, DigestItem
from services.delivery.store import DeliveryRecord
from services.delivery.subscriptions import DigestLimit
from services.errors import StoreUnavailable
from services.names import ACTION_DIGEST, RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient, check_layout

UNASSIGNED = "-"
"""The rep key of customers without an owner rep: they share one digest per window."""
DUE_GRACE_MS = 2_000
"""A digest is due this long after its window ends, so alerts folding at the last moment make it."""
KEEP_MS = 24 * 3600 * 1000
"""How long window bookkeeping outlives its window."""

# KEYS: admitted set, items hash, frozen marker, digest record, due zset.
# ARGV: limit, keep ms, action id, item JSON, now ms, digest record JSON, digest due ms, digest id.
# Returns 1 when the alert was folded into the digest, 0 when it is to be sent on its own.
_FOLD = """
if redis.call('SISMEMBER', KEYS[1], ARGV[3]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SADD', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('SET', KEYS[4], ARGV[6], 'NX') then
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
end
return 1
"""

# KEYS: frozen marker, items hash; ARGV: keep ms. The items (JSON).
_FREEZE = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('HVALS', KEYS[2])
"""


@dataclass(frozen=True)
class Window:
    index: int
    start_ms: int
    end_ms: int

    @classmethod
    def at(cls, now_ms: int, limit: DigestLimit) -> Window:
        index = now_ms // limit.window_ms
        return cls(index, index * limit.window_ms, (index + 1) * limit.window_ms)


def rep_key(action: Action) -> str:
    return action.get("owner_rep_id") or UNASSIGNED


def digest_action_id(subscription_id: str, rep: str, window: Window) -> str:
    """Stable per (subscription, rep, window): scheduling it twice keeps one digest."""
    seed = f"{subscription_id}\x00{rep}\x00{window.start_ms}\x00{window.end_ms}".encode()
    return "dig_" + hashlib.sha256(seed).hexdigest()[:32]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def digest_item(action: Action) -> DigestItem:
    """What the digest keeps of one alert (deterministic: folding it twice adds it once)."""
    item = DigestItem(action_id=action["action_id"], type=action["type"], customer_id=action["customer_id"],
                      at=action["at"], suggestion=action.get("suggestion") or "", reasons=action.get("reasons") or [])
    pause_until = action.get("pause_until")  # type: ignore[misc]
    if pause_until:
        item["pause_until"] = str(pause_until)
    return item


def empty_digest(action_id: str, owner_rep_id: str | None, window: Window) -> Digest:
    """The digest as scheduled: `total` 0 until it is frozen with its items."""
    return Digest(v=1, action_id=action_id, type=ACTION_DIGEST, at=_iso(window.end_ms), owner_rep_id=owner_rep_id,
                  window_start=_iso(window.start_ms), window_end=_iso(window.end_ms), total=0, by_type={},
                  items=[], omitted=0)


def is_frozen(digest: Any) -> bool:
    return bool(digest.get("total"))


def filled(digest: Digest, items: list[DigestItem]) -> Digest:
    """`digest` with its items (in order): counts by type over all, the first DIGEST_ITEMS_MAX listed."""
    by_type: dict[str, int] = {}
    for item in items:
        by_type[item["type"]] = by_type.get(item["type"], 0) + 1
    kept = items[:DIGEST_ITEMS_MAX]
    return Digest(**{**digest, "total": len(items), "by_type": by_type, "items": kept,  # type: ignore[typeddict-item]
                     "omitted": len(items) - len(kept)})


class DigestStore:
    """Folding and freezing on Redis under `keys`. Every method raises StoreUnavailable."""

    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        check_layout(redis, keys)
        self._redis = redis
        self._keys = keys
        self._fold = redis.register_script(_FOLD)
        self._freeze = redis.register_script(_FREEZE)

    async def fold(
        self, subscription_id: str, limit: DigestLimit, action: Action, now_ms: int,
        delivery_id_of: Callable[[str], str],
    ) -> str | None:
        """Admit `action` (returns None: send it on its own) or fold it into its window's digest.

        Folding schedules the digest's delivery, id `delivery_id_of(digest action id)`, due at the
        end of the window (once), and returns that id.
        """
        window = Window.at(now_ms, limit)
        rep = rep_key(action)
        digest = empty_digest(digest_action_id(subscription_id, rep, window), action.get("owner_rep_id"), window)
        delivery_id = delivery_id_of(digest["action_id"])
        due_ms = window.end_ms + DUE_GRACE_MS
        record = DeliveryRecord.new(delivery_id, digest, subscription_id, due_ms)  # type: ignore[arg-type]
        shard = self._keys.delivery_shard(delivery_id)
        digest_id = digest["action_id"]
        keys = [self._keys.digest_admitted(subscription_id, rep, window.index, shard),
                self._keys.digest_items(digest_id, shard), self._keys.digest_frozen(digest_id, shard),
                self._keys.delivery(delivery_id), self._keys.deliveries_due(shard)]
        item = json.dumps(digest_item(action), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        args: list[str | int] = [limit.after, window.end_ms - now_ms + KEEP_MS, action["action_id"], item, now_ms,
                record.to_json(), due_ms, delivery_id]
        try:
            folded = await self._fold(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot fold an alert into a digest: {exc}") from exc
        return delivery_id if folded else None

    async def freeze(self, digest: Digest, delivery_id: str) -> Digest:
        """Fix the digest's content (its delivery: `delivery_id`): later alerts of its window go out on
        their own. Idempotent."""
        shard = self._keys.delivery_shard(delivery_id)
        try:
            raws = await self._freeze(keys=[self._keys.digest_frozen(digest["action_id"], shard),
                                            self._keys.digest_items(digest["action_id"], shard)], args=[KEEP_MS])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot freeze digest {digest['action_id']}: {exc}") from exc
        items: list[DigestItem] = [json.loads(raw) for raw in raws]
        return filled(digest, sorted(items, key=lambda item: (item["at"], item["action_id"])))

    async def forget_items(self, digest_action_id: str, delivery_id: str) -> None:
        """After the frozen digest is stored in its delivery record (`delivery_id`), its items are not needed."""
        try:
            await self._redis.delete(self._keys.digest_items(digest_action_id, self._keys.delivery_shard(delivery_id)))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot clean up digest {digest_action_id}: {exc}") from exc
