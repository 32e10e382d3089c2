"""API keys: which keys are accepted, with which scopes and rates, and refusing to run without any."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from ingest.auth import RateLimiter, match_api_key, require_api_keys
from services.apikeys import Rate, parse_api_keys
from services.errors import ConfigError
from services.settings import IngestSettings

KEYS = parse_api_keys("crm:crm-secret-0123456789, erp:erp-secret-9876543210")


@pytest.mark.parametrize(
    ("token", "name"),
    [
        ("crm-secret-0123456789", "crm"),
        ("erp-secret-9876543210", "erp"),
        ("crm-secret-012345678", None),  # a prefix of a key
        ("crm-secret-01234567890", None),  # a key plus one character
        ("crm:crm-secret-0123456789", None),  # the name is not part of the token
        ("", None),
        (None, None),
    ],
)
def test_match_api_key(token: str | None, name: str | None) -> None:
    key = match_api_key(token, KEYS)
    assert (key.name if key else None) == name


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "no API key configured: set FATIGUE_API_KEYS"),
        (" , ", "no API key configured: set FATIGUE_API_KEYS"),
        ("crm:short", "FATIGUE_API_KEYS is invalid: API key 'crm' is shorter than 16 characters"),
        ("crm:crm-secret-0123456789:owner", "unknown scope owner"),
        ("crm:crm-secret-0123456789:read:fast", "rate 'fast' is not like 100/s"),
        ("crm:crm-secret-0123456789,crm:crm-secret-9999999999", "'crm' is used twice"),
        ("c r m:crm-secret-0123456789", "may only use letters"),
        ("a:b:c:d:e", "expected name:secret[:scopes[:rate]]"),
    ],
)
def test_require_api_keys_refuses_missing_or_bad_keys(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="FATIGUE_API_KEYS") as info:
        require_api_keys(IngestSettings(api_keys=SecretStr(raw)))
    assert fragment in str(info.value)


def test_bare_keys_get_a_stable_name() -> None:
    (key,) = require_api_keys(IngestSettings(api_keys=SecretStr("bare-secret-0123456789")))
    assert key.name.startswith("key-") and match_api_key("bare-secret-0123456789", [key]) is key


def test_scopes_default_to_ingest_and_read_and_admin_is_explicit() -> None:
    default, admin, everything = parse_api_keys(
        "a:aaaaaaaaaaaaaaaa, b:bbbbbbbbbbbbbbbb:admin, c:cccccccccccccccc:all")
    assert default.scopes == {"ingest", "read"}
    assert admin.scopes == {"admin"}
    assert everything.scopes == {"ingest", "read", "admin"}


def test_a_key_may_be_configured_by_its_hash_only() -> None:
    digest = hashlib.sha256(b"the-real-secret-42").hexdigest()
    (key,) = parse_api_keys(f"ops:sha256={digest}:admin")
    assert match_api_key("the-real-secret-42", [key]) is key
    assert match_api_key(f"sha256={digest}", [key]) is None  # the hash is not a key


def test_keys_are_kept_only_as_digests() -> None:
    (key,) = parse_api_keys("crm:crm-secret-0123456789")
    assert "crm-secret-0123456789" not in repr(key) and not hasattr(key, "secret")


@pytest.mark.parametrize(("text", "per_s"), [("100/s", 100), ("6000/m", 100), ("36000/h", 10), ("0.5/s", 0.5)])
def test_rates(text: str, per_s: float) -> None:
    assert Rate.parse(text).per_s == pytest.approx(per_s)


def test_the_rate_limiter_allows_a_burst_then_paces() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    rate = Rate.parse("2/s")
    assert [limiter.take("k", rate) for _ in range(2)] == [0, 0]
    assert limiter.take("k", rate) == pytest.approx(0.5)
    assert limiter.take("other", rate) == 0  # per key
    now[0] += 0.5
    assert limiter.take("k", rate) == 0
    assert limiter.take("k", rate) > 0
