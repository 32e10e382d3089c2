"""API-key authentication, scopes and per-key rate limits (keys in FATIGUE_API_KEYS, services/apikeys.py).

`Authorization: Bearer <key>`: the presented key is hashed (SHA-256) and compared in constant time
with the digest of every configured key; the key itself is never kept. Each route needs one scope
(ingest, read or admin): a recognised key without it is a 403 naming the scope. A key with a rate
is limited per API process by a token bucket: over it, 429 with Retry-After.

The bucket counts what a request carries, as an ingestion gateway does: a request is admitted while
its bucket holds a token and takes one; a request that turns out to carry events or records is then
charged one token per item beyond the first (`charge`), which may overdraw the bucket — the key then
waits until it has refilled. So a batch of 1,000 events under a rate of 5/s is accepted once, and
the key's next request waits about 200 s: the average stays at the rate, whatever the batch size.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.apikeys import ApiKey, Rate, digest_of
from services.errors import ConfigError
from services.settings import IngestSettings

API_KEYS_ENV = "FATIGUE_API_KEYS"


def require_api_keys(settings: IngestSettings) -> list[ApiKey]:
    """The configured keys; ConfigError naming FATIGUE_API_KEYS when there are none or one is bad."""
    try:
        keys = settings.parsed_api_keys()
    except ValueError as exc:
        raise ConfigError(f"{API_KEYS_ENV} is invalid: {exc}") from exc
    if not keys:
        raise ConfigError(
            f"no API key configured: set {API_KEYS_ENV} to comma-separated name:secret[:scopes] entries "
            "(secrets of at least 16 characters, scopes ingest+read+admin), "
            "e.g. FATIGUE_API_KEYS=crm:$(openssl rand -hex 24):ingest+read"
        )
    return keys


def match_api_key(token: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The key whose secret is `token`: digests compared in constant time against every key."""
    if token is None:
        return None
    presented = digest_of(token)
    found = None
    for key in keys:
        if hmac.compare_digest(presented, key.digest):
            found = key
    return found


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Token buckets per name (an API key's, or a provider credential's), in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: Rate) -> float:
        """Admit a request: take one token and answer 0, or answer how long to wait for one."""
        bucket = self._refilled(key, rate)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate.per_s

    def charge(self, key: str, rate: Rate, cost: float) -> None:
        """Take `cost` more tokens for what an admitted request carried; the bucket may go below zero."""
        self._refilled(key, rate).tokens -= cost

    def _refilled(self, key: str, rate: Rate) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate.burst, now)
        bucket.tokens = min(rate.burst, bucket.tokens + (now - bucket.updated_s) * rate.per_s)
        bucket.updated_s = now
        return bucket


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
