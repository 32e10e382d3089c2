"""The identity map: normalisation (pure) and the hashed Redis map against a real redis-server and a
real Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest

from ingest.identity import EMAIL, PHONE, Identity, IdentityMap, normalise_email, normalise_phone, profile_identities
from services.redisio import RedisClient
from tests.conftest import RedisTarget
from tests.helpers import keys_matching


@pytest.mark.parametrize(("text", "region", "e164"), [
    ("+86 138 0013 8000", None, "+8613800138000"),
    ("(415) 555-2671", "US", "+14155552671"),
    ("+1 415-555-2671", "CN", "+14155552671"),  # an explicit country code wins over the region
    ("013800138000", "CN", "+8613800138000"),
])
def test_phones_become_e164(text: str, region: str | None, e164: str) -> None:
    assert normalise_phone(text, region) == Identity(PHONE, e164)


@pytest.mark.parametrize(("text", "region"), [("415 555 2671", None), ("12", "US"), ("not a number", "US")])
def test_what_is_not_a_phone_number_is_refused(text: str, region: str | None) -> None:
    with pytest.raises(ValueError, match="phone number"):
        normalise_phone(text, region)


def test_emails_are_trimmed_and_lower_cased_and_problems_name_the_field() -> None:
    assert normalise_email("  Ana.Lopez@Example.COM ") == Identity(EMAIL, "ana.lopez@example.com")
    found, problems = profile_identities(["A@x.io", "a@X.io", "nope"], ["+14155552671", "x"], None)
    assert found == [Identity(EMAIL, "a@x.io"), Identity(PHONE, "+14155552671")]
    assert [field for field, _ in problems] == ["emails[2]", "phones[1]"]


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every Redis test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def identity_map(redis_client: RedisClient, redis_target: RedisTarget) -> IdentityMap:
    return IdentityMap(redis_client, redis_target.keys, b"k" * 32)


ANA, BO = Identity(EMAIL, "ana@x.io"), Identity(PHONE, "+14155552671")


@pytest.mark.integration
async def test_lookup_replace_and_erase(identity_map: IdentityMap, redis_client: RedisClient, unique: str) -> None:
    await identity_map.replace("cust-1", [ANA, BO])
    assert await identity_map.lookup([ANA, BO, Identity(EMAIL, "who@x.io")]) == ["cust-1", "cust-1", None]
    stored = await keys_matching(redis_client, f"t{unique}:identity:*")
    assert stored and all("ana" not in key and "4155552671" not in key for key in stored)  # hashed, not plain
    await identity_map.replace("cust-1", [], kinds=[EMAIL])  # only the emails replaced: the phone stays
    assert await identity_map.lookup([ANA, BO]) == [None, "cust-1"]
    await identity_map.replace("cust-2", [BO])  # the number moved to another customer
    await identity_map.erase("cust-1")  # ... so erasing the first leaves it to the second
    assert await identity_map.lookup([BO]) == ["cust-2"]
    await identity_map.erase("cust-2")
    assert await identity_map.lookup([BO]) == [None]
    assert await keys_matching(redis_client, f"t{unique}:identit*") == []


@pytest.mark.integration
async def test_concurrent_replaces_of_one_customer_leave_one_whole_set(
    identity_map: IdentityMap, redis_client: RedisClient, redis_target: RedisTarget
) -> None:
    """The set and the identity keys cannot share a transaction on a Cluster: writers of one customer
    take turns, so the last one's addresses, and only those, map to the customer and are in its set."""
    choices = [[Identity(EMAIL, f"a{i}@x.io"), Identity(PHONE, f"+1415555{i:04}")] for i in range(8)]
    await identity_map.replace("cust-c", [Identity(EMAIL, "old@x.io")])
    await asyncio.gather(*(identity_map.replace("cust-c", choice) for choice in choices))
    owners = [await identity_map.lookup(choice) for choice in choices]
    winners = [choice for choice, found in zip(choices, owners, strict=True) if found == ["cust-c", "cust-c"]]
    assert len(winners) == 1 and sum(found.count("cust-c") for found in owners) == 2, owners
    members = await redis_client.smembers(redis_target.keys.identities_of("cust-c"))
    assert members == {f"{i.kind}:{identity_map.digest(i)}" for i in winners[0]}
    assert await identity_map.lookup([Identity(EMAIL, "old@x.io")]) == [None]
    assert await identity_map.erase("cust-c")
    assert await identity_map.lookup(winners[0]) == [None, None]
