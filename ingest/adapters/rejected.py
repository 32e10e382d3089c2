"""The adapters' rejected store: provider events that made no counted event, kept to be listed.

An event whose recipient maps to no customer (or that the contract refuses) is acknowledged to
the provider — a retry would not change anything — and kept here instead of being dropped:
a Redis stream, newest last, trimmed to `max_entries` and to `ttl_s` on every write; reads skip
entries older than `ttl_s`. Listed by GET /v1/adapters/rejected (newest first, with a cursor).

An entry is keyed by nobody, but it can name a customer: its `recipient` (an address a profile may
list, then or later) and the provider's item hold personal data, and an `invalid` entry's event
holds the customer id it was resolved to. A customer's erasure deletes every entry `names_customer`
finds (`erase_matching`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ingest.identity import Identity, identity_of_normalised
from services.names import RedisKeys
from services.redisio import RedisClient

NO_CUSTOMER = "no_customer"
INVALID = "invalid"
SCAN_LIMIT = 2000
"""Entries read at most per listing when filtering by provider."""
ERASE_PAGE = 500
"""Entries read per round trip while erasing (the stream holds at most FATIGUE_ADAPTER_REJECTED_MAX)."""


@dataclass(frozen=True)
class RejectedEntry:
    provider: str
    reason: str  # no_customer | invalid
    detail: str
    recipient: str | None
    event: dict[str, Any]
    source: dict[str, Any]

    def fields(self) -> dict[str, str]:
        return {"provider": self.provider, "reason": self.reason, "detail": self.detail[:1000],
                "recipient": self.recipient or "", "event": json.dumps(self.event, default=str),
                "source": json.dumps(self.source, default=str)[:4000]}


def names_customer(fields: dict[str, str], customer_id: str, members: Collection[str],
                   member_of: Callable[[Identity], str]) -> bool:
    """Whether a stored entry is about the customer: its recipient is one of the customer's identities
    (`members`: `kind:digest`, compared through `member_of`, so no address is needed in clear), or
    its event was resolved to the customer's id."""
    recipient = fields.get("recipient")
    if recipient and members and member_of(identity_of_normalised(recipient)) in members:
        return True
    try:
        event = json.loads(fields.get("event") or "null")
    except json.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("customer_id") == customer_id


def _entry_out(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    def loads(value: str | None) -> Any:
        try:
            return json.loads(value or "null")
        except json.JSONDecodeError:
            return value
    return {"id": entry_id, "received_at_ms": int(entry_id.split("-")[0]), "provider": fields.get("provider"),
            "reason": fields.get("reason"), "detail": fields.get("detail"),
            "recipient": fields.get("recipient") or None, "event": loads(fields.get("event")),
            "source": loads(fields.get("source"))}


class RejectedStore:
    def __init__(self, redis: RedisClient, keys: RedisKeys, *, max_entries: int, ttl_s: int) -> None:
        self._redis = redis
        self._key = keys.adapter_rejected()
        self._max = max_entries
        self._ttl_ms = ttl_s * 1000

    async def add(self, entries: list[RejectedEntry], now_ms: int) -> None:
        if not entries:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self._key, entry.fields(), maxlen=self._max, approximate=False)  # type: ignore[arg-type]
            pipe.xtrim(self._key, minid=str(now_ms - self._ttl_ms))
            pipe.pexpire(self._key, self._ttl_ms)
            await pipe.execute()

    async def list(self, *, now_ms: int, limit: int, before: str | None = None,
                   provider: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first: up to `limit` entries older than the cursor `before`, and the next cursor."""
        oldest = now_ms - self._ttl_ms
        if before is not None and all(int(part) == 0 for part in before.split("-")):
            return [], None  # nothing is older than the first possible stream id (0-0)
        maximum = f"({before}" if before else "+"
        count = limit + 1 if provider is None else SCAN_LIMIT
        rows: list[Any] = list(await self._redis.xrevrange(self._key, max=maximum, min=str(oldest), count=count) or [])
        out: list[dict[str, Any]] = []
        last_seen: str | None = None
        for raw_id, fields in rows:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if provider is None or fields.get("provider") == provider:
                if len(out) == limit:
                    return out, out[-1]["id"]
                out.append(_entry_out(entry_id, dict(fields)))
            last_seen = entry_id
        return out, (last_seen if provider is not None and len(rows) == count else None)

    async def count(self) -> int:
        return int(await self._redis.xlen(self._key))

    async def erase_matching(self, matches: Callable[[dict[str, str]], bool]) -> int:
        """Delete every entry whose fields `matches` (oldest to newest, a page per round trip); how
        many. Entries added meanwhile are newer than the last page read or are read in a later page."""
        erased = 0
        start = "-"
        while True:
            rows: list[Any] = list(await self._redis.xrange(self._key, min=start, max="+", count=ERASE_PAGE) or [])
            ids = [str(raw_id) for raw_id, fields in rows if matches(dict(fields))]
            if ids:
                erased += int(await self._redis.xdel(self._key, *ids))
            if len(rows) < ERASE_PAGE:
                return erased
            start = f"({rows[-1][0]}"
