"""API keys: which keys are accepted, and refusing to run without any."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ingest.auth import match_api_key, require_api_keys
from services.errors import ConfigError
from services.settings import IngestSettings, parse_api_keys

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
    ],
)
def test_require_api_keys_refuses_missing_or_weak_keys(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="FATIGUE_API_KEYS") as info:
        require_api_keys(IngestSettings(api_keys=SecretStr(raw)))
    assert fragment in str(info.value)


def test_bare_keys_get_a_stable_name() -> None:
    (key,) = require_api_keys(IngestSettings(api_keys=SecretStr("bare-secret-0123456789")))
    assert key.name.startswith("key-") and match_api_key("bare-secret-0123456789", [key]) is key
