from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.signing import sign, sign_all, verify, webhook_id
from services.delivery.subscriptions import generate_secret
from services.errors import ConfigError

BODY = b'{"type":"fatigue.throttle","timestamp":"2024-05-01T10:00:00+00:00","data":{"x":"\xc3\xa9"}}'


@pytest.fixture
def secret() -> str:
    return generate_secret()


def headers(msg_id: str, timestamp_s: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp_s), "webhook-signature": signature}


def test_signature_is_accepted_by_the_reference_library(secret: str) -> None:
    now_s = int(time.time())
    signature = sign(secret, "msg_1", now_s, BODY)
    Webhook(secret).verify(BODY, headers("msg_1", now_s, signature))  # raises if wrong
    assert signature.startswith("v1,")


def test_signature_equals_the_reference_library_signature(secret: str) -> None:
    timestamp_s = 1_714_557_600
    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(timestamp_s, tz=UTC), BODY.decode())
    assert sign(secret, "msg_1", timestamp_s, BODY) == expected


def test_verify_accepts_own_signature(secret: str) -> None:
    signature = sign(secret, "msg_1", 1000, BODY)
    assert verify(secret, "msg_1", 1000, BODY, signature, now_s=1000)


@pytest.mark.parametrize(
    ("msg_id", "timestamp_s", "body"),
    [
        ("msg_1", 1000, BODY + b" "),  # tampered body
        ("msg_1", 1001, BODY),  # tampered timestamp
        ("msg_2", 1000, BODY),  # other message id
    ],
)
def test_tampering_fails_here_and_in_the_reference_library(
    secret: str, msg_id: str, timestamp_s: int, body: bytes
) -> None:
    signature = sign(secret, "msg_1", 1000, BODY)
    assert not verify(secret, msg_id, timestamp_s, body, signature, now_s=1000)
    now_s = int(time.time())
    real = sign(secret, "msg_1", now_s, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers(msg_id, now_s + timestamp_s - 1000, real))


def test_other_secret_fails(secret: str) -> None:
    signature = sign(secret, "msg_1", 1000, BODY)
    assert not verify(generate_secret(), "msg_1", 1000, BODY, signature, now_s=1000)


@pytest.mark.parametrize(("now_s", "accepted"), [(1000, True), (1300, True), (700, True), (1301, False), (699, False)])
def test_timestamp_tolerance(secret: str, now_s: int, accepted: bool) -> None:
    signature = sign(secret, "msg_1", 1000, BODY)
    assert verify(secret, "msg_1", 1000, BODY, signature, now_s=now_s) is accepted


def test_any_of_several_signatures_may_match(secret: str) -> None:
    """While a secret rotates, the header lists one signature per secret."""
    old, new = secret, generate_secret()
    now_s = int(time.time())
    both = f"{sign(old, 'msg_1', now_s, BODY)} {sign(new, 'msg_1', now_s, BODY)}"
    assert verify(old, "msg_1", now_s, BODY, both, now_s=now_s)
    assert verify(new, "msg_1", now_s, BODY, both, now_s=now_s)
    Webhook(new).verify(BODY, headers("msg_1", now_s, both))
    assert not verify(generate_secret(), "msg_1", now_s, BODY, both, now_s=now_s)


def test_unknown_signature_version_is_ignored(secret: str) -> None:
    digest = sign(secret, "msg_1", 1000, BODY).partition(",")[2]
    assert not verify(secret, "msg_1", 1000, BODY, f"v2,{digest}", now_s=1000)
    assert not verify(secret, "msg_1", 1000, BODY, "", now_s=1000)


def test_secret_prefix_is_optional(secret: str) -> None:
    bare = secret.removeprefix("whsec_")
    assert sign(bare, "m", 1, BODY) == sign(secret, "m", 1, BODY)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not base64!", "whsec_abc"])
def test_malformed_secret_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        sign(bad, "m", 1, BODY)


def test_webhook_id_is_stable_per_action_and_subscription() -> None:
    first = webhook_id("act_1", "sub_a")
    assert first == webhook_id("act_1", "sub_a")
    assert first.startswith("msg_")
    assert len({first, webhook_id("act_1", "sub_b"), webhook_id("act_2", "sub_a")}) == 3


def test_webhook_id_does_not_confuse_the_parts() -> None:
    assert webhook_id("a.b", "c") != webhook_id("a", "b.c")


def test_sign_all_lists_one_signature_per_secret_and_each_secret_verifies() -> None:
    old, new, other = generate_secret(), generate_secret(), generate_secret()
    now_s = int(time.time())
    header = sign_all([new, old], "msg_1", now_s, BODY)
    assert header == f"{sign(new, 'msg_1', now_s, BODY)} {sign(old, 'msg_1', now_s, BODY)}"
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers("msg_1", now_s, header))
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers("msg_1", now_s, header))


def test_sign_all_signs_a_repeated_secret_once(secret: str) -> None:
    assert sign_all([secret, secret], "m", 1, BODY) == sign(secret, "m", 1, BODY)


def test_sign_all_needs_a_secret() -> None:
    with pytest.raises(ConfigError):
        sign_all([], "m", 1, BODY)
