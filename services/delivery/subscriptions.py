"""Webhook subscriptions, stored in Redis; written by the API, read by the notifier."""

from __future__ import annotations

import base64
import builtins
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import WatchError

from services.errors import StoreUnavailable
from services.names import SECRET_PREFIX, RedisKeys
from services.redaction import mask_url
from services.redisio import RedisClient


def generate_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


FORMATS = ("standard", "slack", "teams", "wecom", "feishu", "dingtalk")
"""`standard`: Standard Webhooks JSON; the others: the chat tool's own bot message format."""

PROVIDER_SECRET_FORMATS = ("feishu", "dingtalk")
"""Formats whose bot hands out the signing secret: the API stores the one given instead of generating one."""

UPDATABLE = frozenset({"url", "events", "format", "filters", "rate_limit_per_minute", "description", "digest",
                       "mentions"})
"""Fields `SubscriptionStore.update` may change; id, secret and created_at never change that way,
and `enabled` changes through `set_enabled` (it carries a reason and a time)."""

MAX_WRITE_TRIES = 20


@dataclass
class Filters:
    """Which actions a subscription wants beyond their type; an empty list matches everything."""

    tiers: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    owner_rep_ids: list[str] = field(default_factory=list)
    customer_ids: list[str] = field(default_factory=list)

    def matches(self, action: Mapping[str, Any]) -> bool:
        profile = action.get("profile") or {}
        checks = (
            (self.tiers, profile.get("tier")),
            (self.stages, profile.get("stage")),
            (self.owner_rep_ids, action.get("owner_rep_id")),
            (self.customer_ids, action.get("customer_id")),
        )
        return all(not allowed or value in allowed for allowed, value in checks)


@dataclass(frozen=True)
class DigestLimit:
    """Storm limit per owner rep: within each clock-aligned window of `window_minutes`, the first
    `after` alerts for one rep go out one by one; the rest are folded into one digest sent when the
    window ends."""

    after: int = 5
    window_minutes: int = 10

    @property
    def window_ms(self) -> int:
        return self.window_minutes * 60_000


CHAT_DEFAULT_DIGEST = DigestLimit()
"""The storm limit a chat-format subscription gets unless it says otherwise (standard: none)."""


def default_digest(format_name: str) -> DigestLimit | None:
    """People read chat messages, so chat formats get digests by default; machines read `standard`."""
    return None if format_name == "standard" else CHAT_DEFAULT_DIGEST


@dataclass
class Subscription:
    id: str
    url: str
    events: list[str]
    secret: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    format: str = "standard"
    filters: Filters = field(default_factory=Filters)
    rate_limit_per_minute: int | None = None
    """Deliveries per minute at most (None: no limit)."""
    previous_secrets: list[dict[str, str]] = field(default_factory=list)
    """[{"secret", "expires_at"}]: secrets rotated out that still sign until they expire."""
    description: str | None = None
    digest: DigestLimit | None = None
    """Per-rep storm limit (None: every alert goes out on its own)."""
    enabled: bool = True
    """False: deliveries are dead-lettered without an attempt (replay them after re-enabling)."""
    disabled_reason: str | None = None
    disabled_at: str | None = None
    mentions: dict[str, str] = field(default_factory=dict)
    """Owner rep id (the CRM's) -> the chat tool's user id: chat messages @-mention the owner's entry.
    Checked by the API; `standard` ignores it."""

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    @property
    def masked_url(self) -> str:
        """The URL as reads show it: tokens in the path (chat bots: the URL is the credential) and the
        query masked (services/redaction.py)."""
        return mask_url(self.url)

    def wants_action(self, action: Mapping[str, Any]) -> bool:
        return self.wants(str(action.get("type"))) and self.filters.matches(action)

    def signing_secrets(self, now: datetime) -> builtins.list[str]:
        """The current secret first, then rotated-out ones still inside their overlap."""
        still = [p["secret"] for p in self.previous_secrets if datetime.fromisoformat(p["expires_at"]) > now]
        return [self.secret, *still]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Subscription:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["filters"] = Filters(**data.get("filters") or {})
        values["digest"] = DigestLimit(**data["digest"]) if data.get("digest") else None
        values["mentions"] = dict(data.get("mentions") or {})  # records written before mentions: none
        return cls(**values)


def rotated(sub: Subscription, new_secret: str, overlap_s: int, now: datetime) -> Subscription:
    """`sub` with `new_secret` current; the old one signs for `overlap_s` more, expired ones are dropped."""
    kept = [p for p in sub.previous_secrets if datetime.fromisoformat(p["expires_at"]) > now]
    if overlap_s > 0:
        kept.append({"secret": sub.secret, "expires_at": (now + timedelta(seconds=overlap_s)).isoformat()})
    return replace(sub, secret=new_secret, previous_secrets=kept)


def changed(sub: Subscription, changes: Mapping[str, Any]) -> Subscription:
    """`sub` with `changes` applied (a subset of UPDATABLE; `filters` as Filters or a dict; `mentions`
    replaced as a whole, None clears it)."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
    values = dict(changes)
    if isinstance(values.get("filters"), Mapping):
        values["filters"] = Filters(**values["filters"])
    if isinstance(values.get("digest"), Mapping):
        values["digest"] = DigestLimit(**values["digest"])
    if "mentions" in values:
        values["mentions"] = dict(values["mentions"] or {})
    return replace(sub, **values)


def with_enabled(sub: Subscription, enabled: bool, reason: str | None, now: datetime) -> Subscription:
    """`sub` enabled (reason and time cleared) or disabled with `reason` at `now`."""
    if enabled:
        return replace(sub, enabled=True, disabled_reason=None, disabled_at=None)
    return replace(sub, enabled=False, disabled_reason=reason, disabled_at=now.isoformat())


class SubscriptionStore:
    """CRUD over one Redis hash: subscription id -> JSON."""

    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._key = keys.subscriptions()

    async def create(self, url: str, events: list[str], *, secret: str | None = None, **options: Any) -> Subscription:
        """Store a new subscription; `secret` None generates a whsec_ one. `options`: the UPDATABLE fields."""
        sub = Subscription(id="sub_" + secrets.token_hex(12), url=url, events=events,
                           secret=secret or generate_secret())
        sub = changed(sub, options)
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

    async def update(self, sub_id: str, changes: Mapping[str, Any]) -> Subscription | None:
        """Apply `changes` (see `changed`) atomically; None when there is no such subscription.

        ValueError for a field that cannot be updated; StoreUnavailable when concurrent writers
        keep winning (MAX_WRITE_TRIES) or Redis fails.
        """
        return await self._modify(sub_id, lambda sub: changed(sub, changes))

    async def rotate_secret(
        self, sub_id: str, overlap_s: int, now: datetime, new_secret: str | None = None
    ) -> Subscription | None:
        """Make a new secret (or `new_secret`) current atomically; the old one stays valid `overlap_s`.

        Previous secrets expired at `now` are dropped. None when there is no such subscription.
        """
        secret = new_secret or generate_secret()
        return await self._modify(sub_id, lambda sub: rotated(sub, secret, overlap_s, now))

    async def _modify(self, sub_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        """Read-change-write under WATCH: a concurrent write to the hash makes us read again."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WRITE_TRIES):
                try:
                    await pipe.watch(self._key)
                    raw = await pipe.hget(self._key, sub_id)
                    if not raw:
                        return None
                    sub = change(Subscription.from_json(str(raw)))
                    pipe.multi()
                    pipe.hset(self._key, sub_id, sub.to_json())
                    await pipe.execute()
                    return sub
                except WatchError:
                    continue
        raise StoreUnavailable(f"subscription {sub_id} kept changing under {MAX_WRITE_TRIES} concurrent writes")

    async def set_enabled(
        self, sub_id: str, enabled: bool, *, reason: str | None = None, now: datetime | None = None
    ) -> Subscription | None:
        """Enable, or disable with a reason, atomically; None when there is no such subscription."""
        at = now or datetime.now(UTC)
        return await self._modify(sub_id, lambda sub: with_enabled(sub, enabled, reason, at))

    async def disable(self, sub_id: str, *, reason: str, now: datetime | None = None) -> bool:
        """Disable with `reason` unless already disabled; True only for the call that disabled it
        (several notifiers, or several failing deliveries, may decide it at the same moment)."""
        at = now or datetime.now(UTC)
        disabled_now = [False]

        def change(sub: Subscription) -> Subscription:
            disabled_now[0] = sub.enabled
            return with_enabled(sub, False, reason, at) if sub.enabled else sub

        return await self._modify(sub_id, change) is not None and disabled_now[0]

    async def delete(self, sub_id: str) -> bool:
        return bool(await self._redis.hdel(self._key, sub_id))

    async def matching(self, event_type: str) -> builtins.list[Subscription]:
        return [sub for sub in await self.list() if sub.wants(event_type)]
