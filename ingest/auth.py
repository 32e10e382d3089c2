"""API-key authentication: `Authorization: Bearer <key>` against the keys in FATIGUE_API_KEYS."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from services.errors import ConfigError
from services.settings import ApiKey, IngestSettings

API_KEYS_ENV = "FATIGUE_API_KEYS"


def require_api_keys(settings: IngestSettings) -> list[ApiKey]:
    """The configured keys; ConfigError naming FATIGUE_API_KEYS when there are none or one is bad."""
    try:
        keys = settings.parsed_api_keys()
    except ValueError as exc:
        raise ConfigError(f"{API_KEYS_ENV} is invalid: {exc}") from exc
    if not keys:
        raise ConfigError(
            f"no API key configured: set {API_KEYS_ENV} to comma-separated name:secret pairs "
            "(secrets of at least 16 characters), e.g. FATIGUE_API_KEYS=crm:$(openssl rand -hex 24)"
        )
    return keys


def match_api_key(token: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The key whose secret equals `token`, compared in constant time against every key."""
    if token is None:
        return None
    presented = token.encode()
    found = None
    for key in keys:
        if hmac.compare_digest(presented, key.secret.get_secret_value().encode()):
            found = key
    return found
