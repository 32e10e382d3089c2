"""Standard Webhooks signatures (https://www.standardwebhooks.com/), as pure functions.

The signed content is `{msg_id}.{timestamp_s}.{body}`; the signature is
`v1,` + base64(HMAC-SHA256(key, signed content)), where the key is the base64-decoded part of the
subscription secret after `whsec_`. No clock is read here: the caller passes the time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from services.errors import ConfigError
from services.names import SECRET_PREFIX

SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (the prefix is optional). Raises ConfigError if malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("webhook secret is not valid base64 after the 'whsec_' prefix") from exc
    if not key:
        raise ConfigError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message: `v1,<base64 digest>`."""
    return f"{SIGNATURE_VERSION},{_digest(secret_key(secret), msg_id, timestamp_s, body)}"


def sign_all(secrets: Iterable[str], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` header with one `v1,<digest>` entry per secret, space-separated.

    While a secret rotates, the current secret and the rotated-out ones still in their overlap all
    sign, so a receiver holding any of them verifies. Duplicate secrets sign once.
    """
    unique = dict.fromkeys(secrets)
    if not unique:
        raise ConfigError("no webhook secret to sign with")
    return " ".join(sign(secret, msg_id, timestamp_s, body) for secret in unique)


def verify(
    secret: str,
    msg_id: str,
    timestamp_s: int,
    body: bytes,
    signature_header: str,
    now_s: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True if the timestamp is within `tolerance_s` of `now_s` and any listed v1 signature matches.

    `signature_header` is a space-separated list of `version,signature` entries (several appear
    while a secret is being rotated); entries of other versions are ignored.
    """
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = _digest(secret_key(secret), msg_id, timestamp_s, body)
    for entry in signature_header.split():
        version, _, candidate = entry.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(candidate.encode(), expected.encode()):
            return True
    return False


def webhook_id(action_id: str, subscription_id: str) -> str:
    """The `webhook-id` of one action sent to one subscription: the same on every retry and resend."""
    digest = hashlib.sha256(f"{action_id}\n{subscription_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"
