"""Endpoint health per subscription: consecutive failures, a circuit breaker, and when to disable.

Every attempt's outcome is recorded in one Redis hash per subscription, shared by all notifiers.
After `failure_threshold` consecutive failed attempts the circuit *opens*: deliveries to that
endpoint wait, without spending attempts, until `open_until`. Then one delivery goes through as a
probe (*half-open*; the others look again every `recheck_s`, for `probe_s` at most): success closes
the circuit (and the notifier releases the deliveries it held back), failure opens it again for
twice as long (capped at `max_open_s`). An endpoint that has failed without a
single success for `disable_after_s` is to be disabled (`Verdict.disable`); the caller disables the
subscription, and an operator re-enables it through the API (which calls `reset`).

States reported by the API and the `fatigue_notifier_endpoints` gauge:
`healthy` (last attempt succeeded, or none yet), `failing` (failures below the threshold),
`circuit_open` (waiting or probing), and `disabled` (the subscription's own flag).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from services.errors import StoreUnavailable
from services.names import RedisKeys
from services.redisio import REDIS_ERRORS, RedisClient

State = Literal["healthy", "failing", "circuit_open", "disabled"]
STATES: tuple[State, ...] = ("healthy", "failing", "circuit_open", "disabled")

# KEYS[1] = health hash; ARGV = now ms, probe ms, recheck ms. Returns ms to wait (0: go ahead).
_GATE = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until_ms') or '0')
if open_until == 0 then return 0 end
local now = tonumber(ARGV[1])
if now < open_until then return open_until - now end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until_ms') or '0')
if now < probe_until then return math.min(probe_until - now, tonumber(ARGV[3])) end
redis.call('HSET', KEYS[1], 'probe_until_ms', now + tonumber(ARGV[2]))
return 0
"""

# KEYS[1] = health hash; ARGV = now ms, threshold, open ms, max open ms, disable-after ms,
# last status ('' when none), last error. Returns {failures, open_until_ms (0: closed), opened now (0/1),
# disable (0/1)}. A failure while the circuit is already open (an attempt that was in flight when
# it opened) does not extend it; a failed probe opens it again for twice as long.
_FAIL = """
local now = tonumber(ARGV[1])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local since = tonumber(redis.call('HGET', KEYS[1], 'failing_since_ms') or '0')
if since == 0 then
  since = now
  redis.call('HSET', KEYS[1], 'failing_since_ms', now)
end
redis.call('HSET', KEYS[1], 'last_failure_ms', now, 'last_status', ARGV[6], 'last_error', ARGV[7])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until_ms') or '0')
local opened = 0
if failures >= tonumber(ARGV[2]) and open_until <= now then
  local opens = redis.call('HINCRBY', KEYS[1], 'opens', 1)
  open_until = now + math.floor(math.min(tonumber(ARGV[3]) * 2 ^ (opens - 1), tonumber(ARGV[4])))
  redis.call('HSET', KEYS[1], 'open_until_ms', open_until)
  redis.call('HDEL', KEYS[1], 'probe_until_ms')
  opened = 1
end
local disable = 0
if now - since >= tonumber(ARGV[5]) then disable = 1 end
return {failures, open_until, opened, disable}
"""

# KEYS[1] = health hash; ARGV = now ms. Returns 1 if the circuit was open (it is closed now).
_SUCCEED = """
local was_open = tonumber(redis.call('HGET', KEYS[1], 'open_until_ms') or '0') > 0
redis.call('HDEL', KEYS[1], 'failures', 'failing_since_ms', 'open_until_ms', 'probe_until_ms', 'opens')
redis.call('HSET', KEYS[1], 'last_success_ms', ARGV[1])
if was_open then return 1 end
return 0
"""


@dataclass(frozen=True)
class CircuitConfig:
    failure_threshold: int = 5
    open_s: float = 30.0
    max_open_s: float = 600.0
    probe_s: float = 60.0
    """How long a half-open probe holds the others back at most (at least the attempt timeout)."""
    recheck_s: float = 5.0
    """While a probe is in flight, how often the others look again (a success releases them at once:
    DeliveryStore.release_held; this is the safety net)."""
    disable_after_s: float = 24 * 3600.0


@dataclass(frozen=True)
class Health:
    """What the store knows about one endpoint; times in ms since the epoch, None when never."""

    consecutive_failures: int = 0
    failing_since_ms: int | None = None
    circuit_open_until_ms: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_failure_ms: int | None = None
    last_success_ms: int | None = None

    def state(self, *, enabled: bool = True) -> State:
        if not enabled:
            return "disabled"
        if self.circuit_open_until_ms:
            return "circuit_open"
        return "failing" if self.consecutive_failures else "healthy"

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Health:
        def ms(name: str) -> int | None:
            value = int(raw.get(name) or 0)
            return value or None

        status = raw.get("last_status")
        return cls(
            consecutive_failures=int(raw.get("failures") or 0),
            failing_since_ms=ms("failing_since_ms"),
            circuit_open_until_ms=ms("open_until_ms"),
            last_status=int(status) if status else None,
            last_error=raw.get("last_error") or None,
            last_failure_ms=ms("last_failure_ms"),
            last_success_ms=ms("last_success_ms"),
        )


@dataclass(frozen=True)
class Verdict:
    """After a failed attempt: the circuit is open until `open_until_ms` (None: closed); `opened`:
    this failure opened it; `disable`: the endpoint has failed for `disable_after_s` without a success."""

    failures: int
    open_until_ms: int | None
    opened: bool
    disable: bool


class EndpointHealthStore:
    """Health hashes under `keys.endpoint_health(id)`. Every method raises StoreUnavailable."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, config: CircuitConfig | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config or CircuitConfig()
        self._gate = redis.register_script(_GATE)
        self._fail = redis.register_script(_FAIL)
        self._succeed = redis.register_script(_SUCCEED)

    @property
    def config(self) -> CircuitConfig:
        return self._config

    async def gate(self, subscription_id: str, now_ms: int) -> int:
        """0 when a delivery may be attempted now (a closed circuit, or this one is the half-open
        probe), else how many ms until the circuit lets the next probe through."""
        try:
            wait = await self._gate(keys=[self._keys.endpoint_health(subscription_id)],
                                    args=[now_ms, int(self._config.probe_s * 1000),
                                          int(self._config.recheck_s * 1000)])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot read the health of endpoint {subscription_id}: {exc}") from exc
        return int(wait)

    async def record_failure(
        self, subscription_id: str, now_ms: int, *, status: int | None, error: str | None
    ) -> Verdict:
        c = self._config
        args = [now_ms, c.failure_threshold, int(c.open_s * 1000), int(c.max_open_s * 1000),
                int(c.disable_after_s * 1000), "" if status is None else status, (error or "")[:500]]
        try:
            failures, open_until, opened, disable = await self._fail(
                keys=[self._keys.endpoint_health(subscription_id)], args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot record a failure of endpoint {subscription_id}: {exc}") from exc
        return Verdict(int(failures), int(open_until) or None, bool(opened), bool(disable))

    async def record_success(self, subscription_id: str, now_ms: int) -> bool:
        """Reset the failure count; True when this closed an open circuit."""
        try:
            return bool(await self._succeed(keys=[self._keys.endpoint_health(subscription_id)], args=[now_ms]))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot record a success of endpoint {subscription_id}: {exc}") from exc

    async def get(self, subscription_id: str) -> Health:
        return (await self.get_many([subscription_id]))[subscription_id]

    async def get_many(self, subscription_ids: Iterable[str]) -> dict[str, Health]:
        ids = list(subscription_ids)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sub_id in ids:
                    pipe.hgetall(self._keys.endpoint_health(sub_id))
                raws = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot read endpoint health: {exc}") from exc
        return {sub_id: Health.from_hash(_decoded(raw)) for sub_id, raw in zip(ids, raws, strict=True)}

    async def reset(self, subscription_id: str) -> None:
        """Forget the failures (re-enabling through the API starts from a clean slate)."""
        try:
            await self._redis.delete(self._keys.endpoint_health(subscription_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot reset the health of endpoint {subscription_id}: {exc}") from exc


def _decoded(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value

    return {text(k): text(v) for k, v in raw.items()}
