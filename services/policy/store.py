"""The fatigue policy stored in Redis: replaced through the API (`PUT /v1/policy`), polled by the scorer.

Precedence: a policy stored here wins over the scorer's policy file; the file (or the packaged
default) applies while none is stored.

Layout: `keys.policy()` is a hash {version, yaml, sha256, updated_at}; `keys.policy_version()` is the
version counter. One Lua script validates the expected version (If-Match), INCRs the counter and
writes the hash, so concurrent writers get distinct versions and a reader never sees a version
without its document. The scorer polls only the counter (one GET) and reads the hash when it moved.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from services.errors import FatigueError, PolicyError, StoreUnavailable
from services.names import RedisKeys
from services.policy.model import Policy, PolicyDoc, parse_policy
from services.redisio import REDIS_ERRORS, RedisClient, check_layout

# KEYS: policy hash, version counter. ARGV: yaml, sha256, updated_at, expected version ('' = any).
# Returns {1, new_version} when stored, {0, current_version} when the expected version did not match.
_PUT_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= current then
  return {0, current}
end
local version = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'version', version, 'yaml', ARGV[1], 'sha256', ARGV[2], 'updated_at', ARGV[3])
return {1, version}
"""

# KEYS: policy hash, version counter. ARGV: expected version ('' = any). The counter moves on, so
# versions never repeat and the scorer notices the removal. Returns {1, removed version (0: none)}
# or {0, current_version} when the expected version did not match.
_DELETE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  return {0, current}
end
if current > 0 or redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('INCR', KEYS[2])
end
return {1, current}
"""


# KEYS: policy hash. ARGV: version, problem. Sets the problem only while that version is stored.
_PROBLEM_SCRIPT = """
if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'problem', ARGV[2])
  return 1
end
return 0
"""


class PolicyVersionMismatch(FatigueError):
    """`put(expected_version=…)` found another version in force; re-read the policy and retry."""

    operator_action = "GET the current policy, re-apply the change to it and PUT again with its version."

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"the stored policy is version {current or 'none (no policy stored)'}, not {expected}")
        self.expected = expected
        self.current = current


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def policy_values(text: str) -> dict[str, Any]:
    """The effective settings of a *valid* policy document as JSON values (defaults filled in)."""
    return PolicyDoc.model_validate(yaml.safe_load(text) or {}).model_dump(mode="json", by_alias=True)


def yaml_text_of_json(obj: dict[str, Any], raw: str) -> str:
    """A policy sent as a JSON object, as the document to store: the text itself when YAML reads it
    the same (JSON is a YAML subset, line numbers in errors then match what was sent), else re-indented."""
    try:
        if yaml.safe_load(raw) == obj:
            return raw
    except yaml.YAMLError:
        pass
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class StoredPolicy:
    version: int
    yaml: str
    sha256: str
    updated_at: datetime
    problem: str | None = None
    """Set by a scorer that refused this version at run time (the core failed with it)."""

    def to_hash(self) -> dict[str, str]:
        fields = {
            "version": str(self.version),
            "yaml": self.yaml,
            "sha256": self.sha256,
            "updated_at": self.updated_at.isoformat(),
        }
        if self.problem is not None:
            fields["problem"] = self.problem
        return fields

    @classmethod
    def from_hash(cls, fields: Mapping[str, str], where: str) -> StoredPolicy:
        """PolicyError when the hash was written by hand and lacks a field or has a bad one."""
        try:
            text = fields["yaml"]
            return cls(
                version=int(fields["version"]),
                yaml=text,
                sha256=fields.get("sha256") or sha256_of(text),
                updated_at=datetime.fromisoformat(fields["updated_at"]) if "updated_at" in fields else _EPOCH,
                problem=fields.get("problem") or None,
            )
        except (KeyError, ValueError) as exc:
            raise PolicyError(f"{where}: the stored policy is unreadable ({type(exc).__name__}: {exc})") from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PolicyStore:
    """Read and replace the stored policy. Redis failures propagate as redis-py raises them (REDIS_ERRORS:
    the API answers 503)."""

    def __init__(self, redis: RedisClient, keys: RedisKeys,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        check_layout(redis, keys)
        self._redis = redis
        self._keys = keys
        self._now = now
        self._put_script = redis.register_script(_PUT_SCRIPT)
        self._delete_script = redis.register_script(_DELETE_SCRIPT)
        self._problem_script = redis.register_script(_PROBLEM_SCRIPT)

    async def get(self) -> StoredPolicy | None:
        """The stored policy as written, or None; PolicyError when the hash is unreadable."""
        fields = await self._redis.hgetall(self._keys.policy())
        decoded = {str(k): str(v) for k, v in fields.items()}  # the clients are built with decode_responses
        return StoredPolicy.from_hash(decoded, self._keys.policy()) if decoded else None

    async def put(self, text: str, source: str = "policy", *, expected_version: int | None = None,
                  check: Callable[[Policy], None] | None = None) -> StoredPolicy:
        """Validate `text` (and run `check` on the policy: the dry run through the core), then store it
        as the next version, atomically.

        Raises PolicyError ("source:line: field: reason; …") before anything is written when the
        document is invalid, holds no settings at all (empty or only comments) or `check` refuses it,
        and PolicyVersionMismatch when `expected_version` (0: none stored yet) is not the stored version.
        """
        # a large document must not block the loop; a body without settings is refused, not read as the defaults
        policy = await asyncio.to_thread(functools.partial(parse_policy, empty_means_defaults=False), text, source)
        if check is not None:
            await asyncio.to_thread(check, policy)
        updated_at = self._now()
        digest = sha256_of(text)
        expected = "" if expected_version is None else str(expected_version)
        keys = [self._keys.policy(), self._keys.policy_version()]
        stored, version = await self._put_script(keys=keys, args=[text, digest, updated_at.isoformat(), expected])
        if not stored:
            raise PolicyVersionMismatch(expected_version or 0, int(version))
        return StoredPolicy(version=int(version), yaml=text, sha256=digest, updated_at=updated_at)

    async def report_problem(self, version: int, problem: str) -> bool:
        """Record why `version` was refused at run time (shown by GET /v1/policy); False when another
        version is stored by now."""
        return bool(await self._problem_script(keys=[self._keys.policy()], args=[str(version), problem[:2000]]))

    async def delete(self, *, expected_version: int | None = None) -> int | None:
        """Remove the stored policy (the scorer falls back to its file); the version removed, or None.

        The version counter still moves on, so later versions never repeat an earlier number.
        PolicyVersionMismatch when `expected_version` is not the stored version.
        """
        expected = "" if expected_version is None else str(expected_version)
        keys = [self._keys.policy(), self._keys.policy_version()]
        done, version = await self._delete_script(keys=keys, args=[expected])
        if not done:
            raise PolicyVersionMismatch(expected_version or 0, int(version))
        return int(version) or None


class PolicySource:
    """What the scorer polls: the stored version (cheap) and, when it moved, the parsed policy.

    Redis failures raise StoreUnavailable (retriable); an invalid stored document raises PolicyError.
    """

    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._store = PolicyStore(redis, keys)

    async def version_stamp(self) -> str | None:
        """The stored version counter as written (one GET), None when no policy is stored.

        Compared for change only: when it moves, `current()` reads and parses the document.
        """
        try:
            raw = await self._redis.get(self._keys.policy_version())
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the policy version from Redis failed: {exc}") from exc
        return None if raw is None else str(raw)

    async def current(self, fallback: Policy) -> tuple[int | None, Policy]:
        """(version, policy) of the stored policy, or (None, fallback) when none is stored."""
        try:
            stored = await self._store.get()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the stored policy from Redis failed: {exc}") from exc
        if stored is None:
            return None, fallback
        policy = await asyncio.to_thread(parse_policy, stored.yaml, f"stored policy v{stored.version}")
        return stored.version, policy

    async def report_problem(self, version: int, problem: str) -> None:
        """StoreUnavailable when Redis does not answer."""
        try:
            await self._store.report_problem(version, problem)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"recording a policy problem in Redis failed: {exc}") from exc
