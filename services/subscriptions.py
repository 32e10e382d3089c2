"""Webhook subscriptions, stored in Redis; written by the API, read by the notifier."""

from __future__ import annotations

import base64
import builtins
import json
import logging
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis

from services.names import SECRET_PREFIX, RedisKeys


def generate_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Subscription:
    id: str
    url: str
    events: list[str]
    secret: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Subscription:
        data = json.loads(raw)
        return cls(**{k: data[k] for k in ("id", "url", "events", "secret", "created_at")})


class SubscriptionStore:
    """CRUD over one Redis hash: subscription id -> JSON."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._key = keys.subscriptions()

    async def create(self, url: str, events: list[str]) -> Subscription:
        sub = Subscription(id="sub_" + secrets.token_hex(12), url=url, events=events, secret=generate_secret())
        await self._redis.hset(self._key, sub.id, sub.to_json())
        return sub

    async def get(self, sub_id: str) -> Subscription | None:
        raw = await self._redis.hget(self._key, sub_id)
        return Subscription.from_json(str(raw)) if raw else None

    async def list(self) -> builtins.list[Subscription]:
        """All readable subscriptions; an unreadable one is logged and skipped, never fatal."""
        subs = []
        for sub_id, raw in (await self._redis.hgetall(self._key)).items():
            try:
                subs.append(Subscription.from_json(str(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                logging.getLogger(__name__).error("subscription %s is unreadable, skipped: %s", sub_id, exc)
        return sorted(subs, key=lambda s: s.created_at)

    async def delete(self, sub_id: str) -> bool:
        return bool(await self._redis.hdel(self._key, sub_id))

    async def matching(self, event_type: str) -> builtins.list[Subscription]:
        return [sub for sub in await self.list() if sub.wants(event_type)]
