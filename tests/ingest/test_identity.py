"""The identity map: normalisation (pure) and the hashed Redis map against a real redis-server."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from ingest.identity import EMAIL, PHONE, Identity, IdentityMap, normalise_email, normalise_phone, profile_identities
from services.names import RedisKeys


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
def identity_map(redis_client: Redis, unique: str) -> IdentityMap:
    return IdentityMap(redis_client, RedisKeys(f"t{unique}:"), b"k" * 32)


ANA, BO = Identity(EMAIL, "ana@x.io"), Identity(PHONE, "+14155552671")


@pytest.mark.integration
async def test_lookup_replace_and_erase(identity_map: IdentityMap, redis_client: Redis, unique: str) -> None:
    await identity_map.replace("cust-1", [ANA, BO])
    assert await identity_map.lookup([ANA, BO, Identity(EMAIL, "who@x.io")]) == ["cust-1", "cust-1", None]
    stored = await redis_client.keys(f"t{unique}:identity:*")
    assert stored and all("ana" not in key and "4155552671" not in key for key in stored)  # hashed, not plain
    await identity_map.replace("cust-1", [], kinds=[EMAIL])  # only the emails replaced: the phone stays
    assert await identity_map.lookup([ANA, BO]) == [None, "cust-1"]
    await identity_map.replace("cust-2", [BO])  # the number moved to another customer
    await identity_map.erase("cust-1")  # ... so erasing the first leaves it to the second
    assert await identity_map.lookup([BO]) == ["cust-2"]
    await identity_map.erase("cust-2")
    assert await identity_map.lookup([BO]) == [None]
    assert await redis_client.keys(f"t{unique}:identit*") == []
