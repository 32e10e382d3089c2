"""Who is the customer? The identity map from a hashed email or phone number to a customer id.

Providers know an address, not our customer id. Profiles (`PUT /v1/customers/{id}/profile`) may
carry `emails` and `phones`; they are normalised (emails trimmed and lower-cased, phones E.164
with an optional default region), hashed with HMAC-SHA256 under `FATIGUE_IDENTITY_HASH_KEY`, and
kept in Redis only (never on the profiles topic, never in a snapshot):

    <prefix>identity:<digest>        -> customer id
    <prefix>identities:<customer id> -> set of `email:<digest>` / `phone:<digest>` of that customer

`lookup` resolves a batch of addresses in one round trip (MGET; on a Redis Cluster one per node).
`replace` swaps one customer's identities: an address that moved to another customer is left to it.
`erase` removes them all (for a customer's erasure); `members_of` and `member` let the erasure
find the rejected store's entries of the customer's addresses without keeping them in clear.

The set and the identity keys are in different hash slots on a Cluster, so no single transaction
covers them. Instead one writer at a time changes a customer's identities (an expiring lock key per
customer), in an order that keeps the set a superset of the identity keys pointing at the customer
at every step — a writer that dies half-way leaves at most extra members, which the next replace
or erasure cleans up, never an identity key the erasure cannot find.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers
from redis.exceptions import LockError, WatchError

from services.names import RedisKeys
from services.redisio import RedisClient, mget_many

EMAIL = "email"
PHONE = "phone"
log = logging.getLogger(__name__)

LOCK_TTL_S = 10.0
"""A customer's identity lock lapses after this long if its holder died (a swap takes milliseconds)."""
LOCK_WAIT_S = 5.0
"""How long a swap waits for another swap of the same customer before it gives up (WatchError: 503)."""

# KEYS[1] = an identity key; ARGV[1] = customer id. Deletes it only while it names that customer.
_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Identity:
    """A normalised address: `kind` is email or phone, `value` lower-case email or E.164 number."""

    kind: str
    value: str


def identity_of_normalised(value: str) -> Identity:
    """The identity a normalised value stands for (as kept in the rejected store's `recipient`):
    an email holds an @, a phone number is E.164."""
    return Identity(EMAIL if "@" in value else PHONE, value)


def normalise_email(text: str) -> Identity:
    value = text.strip().lower()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain or any(c.isspace() for c in value):
        raise ValueError(f"{text[:80]!r} is not an email address")
    return Identity(EMAIL, value)


def normalise_phone(text: str, default_region: str | None = None) -> Identity:
    """E.164 of `text`; numbers without +country code need `default_region` (e.g. US, CN)."""
    try:
        number = phonenumbers.parse(text.strip(), default_region.upper() if default_region else None)
    except phonenumbers.NumberParseException as exc:
        hint = "" if default_region else " (write it with +country code, or set FATIGUE_IDENTITY_DEFAULT_REGION)"
        raise ValueError(f"{text[:40]!r} is not a phone number{hint}") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{text[:40]!r} is not a possible phone number")
    return Identity(PHONE, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def profile_identities(emails: Sequence[str] | None, phones: Sequence[str] | None,
                       default_region: str | None) -> tuple[list[Identity], list[tuple[str, str]]]:
    """The normalised identities of a profile, and the (field, reason) of every one refused."""
    found: list[Identity] = []
    problems: list[tuple[str, str]] = []
    for field, values, normalise in (
        ("emails", emails or [], normalise_email),
        ("phones", phones or [], lambda text: normalise_phone(text, default_region)),
    ):
        for index, text in enumerate(values):
            try:
                found.append(normalise(text))
            except ValueError as exc:
                problems.append((f"{field}[{index}]", str(exc)))
    return list(dict.fromkeys(found)), problems


class IdentityMap:
    def __init__(self, redis: RedisClient, keys: RedisKeys, hash_key: bytes) -> None:
        self._redis = redis
        self._keys = keys
        self._hash_key = hash_key

    def digest(self, identity: Identity) -> str:
        return hmac.new(self._hash_key, f"{identity.kind}:{identity.value}".encode(), hashlib.sha256).hexdigest()

    def member(self, identity: Identity) -> str:
        """How a customer's set of identities names `identity`: `kind:digest` (never the address)."""
        return f"{identity.kind}:{self.digest(identity)}"

    async def members_of(self, customer_id: str) -> set[str]:
        """The `kind:digest` of every identity the customer's profile lists (for its erasure)."""
        return {_text(m) or "" for m in await self._redis.smembers(self._keys.identities_of(customer_id))}

    async def lookup(self, identities: Sequence[Identity]) -> list[str | None]:
        """The customer id of each identity (None: unknown), in one round trip."""
        if not identities:
            return []
        values = await mget_many(self._redis, [self._keys.identity(self.digest(i)) for i in identities])
        return [_text(v) for v in values]

    async def replace(self, customer_id: str, identities: Sequence[Identity],
                      kinds: Sequence[str] = (EMAIL, PHONE)) -> None:
        """Make `identities` the customer's addresses of `kinds`, dropping the ones of those kinds it had
        before (unless they point to another customer since); its addresses of other kinds stay."""
        await self._swap(customer_id, {f"{i.kind}:{self.digest(i)}" for i in identities}, set(kinds))

    async def erase(self, customer_id: str) -> bool:
        """Remove every identity of the customer (those that now point to another customer stay);
        whether it had any."""
        return await self._swap(customer_id, set(), {EMAIL, PHONE}) > 0

    async def _swap(self, customer_id: str, new: set[str], kinds: set[str]) -> int:
        """Replace the customer's identities of `kinds` by `new` (members `kind:digest`); how many it had
        before. WatchError when another swap of the same customer holds the lock for LOCK_WAIT_S."""
        lock = self._redis.lock(self._keys.identities_lock(customer_id), timeout=LOCK_TTL_S,
                                blocking_timeout=LOCK_WAIT_S, sleep=0.02, thread_local=False)
        if not await lock.acquire():
            raise WatchError(f"identities of {customer_id!r} are being changed by another request; retry")
        try:
            return await self._swap_locked(customer_id, new, kinds)
        finally:
            try:
                await lock.release()
            except LockError:  # it lapsed (LOCK_TTL_S) while we worked: nothing of ours to release
                log.warning("the identity lock of a customer lapsed before its swap finished")

    async def _swap_locked(self, customer_id: str, new: set[str], kinds: set[str]) -> int:
        """Set members are `kind:digest`; the identity keys are named by the digest alone. The set
        grows first and shrinks last, so it always lists every identity key naming the customer."""
        members_key = self._keys.identities_of(customer_id)
        old = {_text(m) or "" for m in await self._redis.smembers(members_key)}
        final = new | {m for m in old if m.partition(":")[0] not in kinds}
        gone = sorted(old - final)
        if new - old:
            await self._redis.sadd(members_key, *sorted(new - old))
        if new or gone:
            async with self._redis.pipeline(transaction=False) as pipe:
                for member in sorted(new):
                    pipe.set(self._keys.identity(member.partition(":")[2]), customer_id)
                for member in gone:  # unless it points to another customer since
                    pipe.eval(_DELETE_IF_OWNER, 1, self._keys.identity(member.partition(":")[2]), customer_id)
                await pipe.execute()
        if gone:
            await self._redis.srem(members_key, *gone)
        return len(old)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
