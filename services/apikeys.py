"""API keys as configured in `FATIGUE_API_KEYS`: who may call the API, for what, and how often.

Format (docs/api.md#authentication): comma-separated entries

    name:secret[:scopes[:rate]]

- `secret`: at least 16 characters, or `sha256=<64 hex digits>` (the SHA-256 of the secret) so the
  configuration holds no usable key. Keys are kept and compared only as SHA-256 digests, in
  constant time against every configured key.
- `scopes`: `+`-separated, from `ingest` (post events and profiles), `read` (customers, decisions,
  the policy), `admin` (the policy, subscriptions, deliveries, dead letters, erasure); `all` means
  all three. Default: `ingest+read`. Admin must be given explicitly.
- `rate`: requests allowed per key and API process, e.g. `100/s`, `6000/m`; default: unlimited,
  or `FATIGUE_API_RATE_LIMIT` when set.

A bare `secret` (no name) is named after its hash (`key-1a2b3c4d`). The name is also the producer
used for event de-duplication, so two keys must not share a name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SCOPE_INGEST = "ingest"
SCOPE_READ = "read"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_INGEST, SCOPE_READ, SCOPE_ADMIN)
DEFAULT_SCOPES = frozenset({SCOPE_INGEST, SCOPE_READ})
MIN_SECRET_CHARS = 16

_NAME = re.compile(r"^[A-Za-z0-9._@+\-]{1,64}$")
_HASHED = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")
_PER_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Rate:
    """Requests per second, with bursts of up to `burst` requests."""

    per_s: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.match(text.strip())
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"rate {text!r} is not like 100/s, 6000/m or 50000/h")
        per_s = float(match.group(1)) / _PER_S[match.group(2)]
        return cls(per_s, burst=max(1.0, per_s))

    def __str__(self) -> str:
        return f"{self.per_s:g}/s"


@dataclass(frozen=True)
class ApiKey:
    """One API key: its name (producer for de-duplication, logs), the SHA-256 of its secret, scopes, rate."""

    name: str
    digest: bytes
    scopes: frozenset[str] = DEFAULT_SCOPES
    rate: Rate | None = None

    def may(self, scope: str) -> bool:
        return scope in self.scopes


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_api_keys(raw: str, default_rate: Rate | None = None) -> list[ApiKey]:
    """The keys of `FATIGUE_API_KEYS`; ValueError naming the entry and what is wrong with it."""
    keys: list[ApiKey] = []
    for number, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if item:
            keys.append(_parse_entry(item, number, default_rate))
    names = [key.name for key in keys]
    if duplicate := next((name for name in names if names.count(name) > 1), None):
        raise ValueError(f"API key name {duplicate!r} is used twice; names must be unique (they are producers)")
    return keys


def _parse_entry(item: str, number: int, default_rate: Rate | None) -> ApiKey:
    parts = item.split(":")
    if len(parts) == 1:
        secret = parts[0]
        name = "key-" + hashlib.sha256(secret.encode()).hexdigest()[:8]
        parts = [name, secret]
    if len(parts) > 4:
        raise ValueError(f"entry {number}: expected name:secret[:scopes[:rate]], got {len(parts)} ':'-separated parts")
    name, secret, *rest = parts
    if not _NAME.match(name):
        raise ValueError(f"entry {number}: API key name {name!r} may only use letters, digits and . _ @ + - (1-64)")
    scopes = _parse_scopes(rest[0], name) if rest and rest[0] else DEFAULT_SCOPES
    rate = Rate.parse(rest[1]) if len(rest) > 1 and rest[1] else default_rate
    return ApiKey(name, _secret_digest(secret, name), scopes, rate)


def _secret_digest(secret: str, name: str) -> bytes:
    if hashed := _HASHED.match(secret):
        return bytes.fromhex(hashed.group(1))
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"API key {name!r} is shorter than {MIN_SECRET_CHARS} characters")
    return digest_of(secret)


def _parse_scopes(text: str, name: str) -> frozenset[str]:
    given = {scope.strip().lower() for scope in text.split("+") if scope.strip()}
    if "all" in given:
        given = (given - {"all"}) | set(SCOPES)
    unknown = given - set(SCOPES)
    if unknown or not given:
        raise ValueError(f"API key {name!r}: unknown scope {', '.join(sorted(unknown)) or '(none)'}; "
                         f"use {', '.join(SCOPES)} or all, joined with +")
    return frozenset(given)
