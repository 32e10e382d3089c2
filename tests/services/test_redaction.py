"""Credentials masked in URLs and free text (services/redaction.py): every form we know of.

URL shapes are the providers' documented ones (Slack incoming webhooks, Teams incoming webhooks and
Workflows, WeCom group bots, Feishu / Lark custom bots, DingTalk custom robots with their signature
parameters, Discord webhooks); the tokens are made up.
"""

from __future__ import annotations

import pytest

from services.redaction import MASK, is_secret_key, mask_secret, mask_url, redact

SLACK_TOKEN = "kL9vQ2xR7mN4pT8wZ3yB6cDq"
WECOM_KEY = "693a91f6-7e1c-4bc4-97a0-0ec2f1fa5a9b"
DINGTALK_TOKEN = "0f3c9a8b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"
DINGTALK_SIGN = "nT7yXk2QmZ%2BaBcDeFgHiJkLmNoPqRsTuVwXyZ0123%3D"
FEISHU_TOKEN = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
TEAMS_ID = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TEAMS_SIG = "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA123456"
DISCORD_TOKEN = "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789_-abcdefGHIJ"
API_KEY = "fk_Q2x8vR7mN4pT8wZ3yB6cDqL9"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNATURE = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
TWILIO_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
PASSWORD = "s3cr3t-Passw0rd-of-redis"
CONFIGURED_KEY = "crm-integration-key-0123"

SECRETS = [SLACK_TOKEN, WECOM_KEY, DINGTALK_TOKEN, DINGTALK_SIGN, FEISHU_TOKEN, TEAMS_ID, TEAMS_SIG, DISCORD_TOKEN,
           API_KEY, WEBHOOK_SECRET, SIGNATURE, TWILIO_SIGNATURE, PASSWORD, CONFIGURED_KEY]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN}",
         f"https://hooks.slack.com/services/{MASK}/{MASK}/{MASK}{SLACK_TOKEN[-4:]}"),
        (f"https://hooks.slack.com/triggers/T0123ABCD/1234567890/{SLACK_TOKEN}",
         f"https://hooks.slack.com/triggers/{MASK}/{MASK}/{MASK}{SLACK_TOKEN[-4:]}"),
        (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}",
         f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={MASK}{WECOM_KEY[-4:]}"),
        (f"https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}&timestamp=1700000000000"
         f"&sign={DINGTALK_SIGN}",
         f"https://oapi.dingtalk.com/robot/send?access_token={MASK}{DINGTALK_TOKEN[-4:]}&timestamp=1700000000000"
         f"&sign={MASK}{DINGTALK_SIGN[-4:]}"),
        (f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_TOKEN}",
         f"https://open.feishu.cn/open-apis/bot/v2/hook/{MASK}{FEISHU_TOKEN[-4:]}"),
        (f"https://open.larksuite.com/open-apis/bot/v2/hook/{FEISHU_TOKEN}",
         f"https://open.larksuite.com/open-apis/bot/v2/hook/{MASK}{FEISHU_TOKEN[-4:]}"),
        (f"https://discord.com/api/webhooks/123456789012345678/{DISCORD_TOKEN}",
         f"https://discord.com/api/webhooks/{MASK}{'123456789012345678'[-4:]}/{MASK}{DISCORD_TOKEN[-4:]}"),
        ("https://user:" + PASSWORD + "@example.com/hook?a=1", f"https://{MASK}@example.com/hook?a=1"),
        (f"redis://:{PASSWORD}@redis:6379/0", f"redis://{MASK}@redis:6379/0"),
        # a Redis Cluster's seed list: the password masked, every host kept for the operator
        (f"rediss+cluster://app:{PASSWORD}@r1:7000,r2:7001/0?ssl_ca_certs=/ca.pem",
         f"rediss+cluster://{MASK}@r1:7000,r2:7001/0?ssl_ca_certs=/ca.pem"),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"),
        (f"https://example.com/in?token=short&x=1#access_token={SLACK_TOKEN}",
         f"https://example.com/in?token={MASK}&x=1#access_token={MASK}{SLACK_TOKEN[-4:]}"),
        # a relay on another host keeps the provider's path: masked the same way
        (f"http://127.0.0.1:9000/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN}",
         f"http://127.0.0.1:9000/services/{MASK}/{MASK}/{MASK}{SLACK_TOKEN[-4:]}"),
        (f"http://relay.internal/open-apis/bot/v2/hook/{FEISHU_TOKEN}",
         f"http://relay.internal/open-apis/bot/v2/hook/{MASK}{FEISHU_TOKEN[-4:]}"),
        # not secrets: kept as they are
        ("https://example.com/services/billing/v2", "https://example.com/services/billing/v2"),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("https://example.com/v1/customers/cust-0241?list=cooling&limit=50",
         "https://example.com/v1/customers/cust-0241?list=cooling&limit=50"),
        ("http://[::1]:9000/hook?timestamp=1700000000", "http://[::1]:9000/hook?timestamp=1700000000"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        f"https://contoso.webhook.office.com/webhookb2/{FEISHU_TOKEN}@{WECOM_KEY}/IncomingWebhook/{TEAMS_ID}/"
        f"{FEISHU_TOKEN}",
        f"https://prod-12.westeurope.logic.azure.com:443/workflows/{TEAMS_ID}/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}",
        f"https://receiver.example.org/hooks/{SLACK_TOKEN}",  # a generated path token on any host
        f"https://crm.example.org/in?apikey={SLACK_TOKEN}&X-Api-Key={WECOM_KEY}&client_secret={PASSWORD}",
    ],
)
def test_mask_url_leaves_no_secret_and_keeps_scheme_and_host(url: str) -> None:
    masked = mask_url(url)
    assert not [secret for secret in SECRETS if secret in masked], masked
    assert masked.startswith(url.split("/")[0] + "//" + url.split("/")[2].rsplit("@", 1)[-1])


def test_mask_url_of_garbage_masks_all() -> None:
    assert mask_url("http://[not-an-ip/" + SLACK_TOKEN) == MASK + SLACK_TOKEN[-4:]
    assert SLACK_TOKEN not in mask_url("http://host:notaport/" + SLACK_TOKEN)


def test_mask_secret_shows_the_last_four_of_long_values_only() -> None:
    assert mask_secret("abcdefghijkl") == MASK + "ijkl"
    assert mask_secret("abcdefghijk") == MASK
    assert mask_secret(MASK + "ijkl") == MASK + "ijkl"  # masking twice changes nothing


@pytest.mark.parametrize("key", ["key", "KEY", "access_token", "sign", "sig", "X-Api-Key", "client_secret",
                                 "webhook_secret", "password", "refresh-token"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["timestamp", "list", "limit", "api-version", "sv", "sp", "a", "status"])
def test_not_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


TEXTS = [
    f"POST https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN} \"HTTP/1.1 200 OK\"",
    f"HTTP Request: POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}.",
    f"(url='https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}&sign={DINGTALK_SIGN}')",
    f"Authorization: Bearer {API_KEY}",
    f"authorization: bearer {CONFIGURED_KEY}",
    f"headers={{'Authorization': 'Bearer {API_KEY}', 'webhook-signature': '{SIGNATURE} {SIGNATURE}'}}",
    f'{{"webhook-signature": "{SIGNATURE}", "X-Twilio-Signature": "{TWILIO_SIGNATURE}"}}',
    f"webhook-signature: {SIGNATURE} {SIGNATURE}",
    f"X-Twilio-Signature: {TWILIO_SIGNATURE}",
    f"x-api-key={API_KEY}; password={PASSWORD}",
    f"subscription secret {WEBHOOK_SECRET} rotated",
    f"key {API_KEY} used",
    f"REDIS_URL=redis://:{PASSWORD}@redis:6379/0",
    "Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad url "
    f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_TOKEN}",
    f"Authorization: Basic {SLACK_TOKEN}",
    f"sasl_plain_password='{PASSWORD}'",
]


@pytest.mark.parametrize("text", TEXTS)
def test_redact_leaves_no_known_secret(text: str) -> None:
    redacted = redact(text, known_secrets=[CONFIGURED_KEY])
    assert not [secret for secret in SECRETS if secret in redacted], redacted
    assert MASK in redacted


def test_redact_keeps_the_rest_of_the_text() -> None:
    text = (f"webhook wh_1 attempt 2 to https://hooks.slack.com/services/T1/B2/{SLACK_TOKEN} failed (HTTP 500); "
            "next in 5.0s")
    assert redact(text) == (f"webhook wh_1 attempt 2 to https://hooks.slack.com/services/{MASK}/{MASK}/{MASK}"
                            f"{SLACK_TOKEN[-4:]} failed (HTTP 500); next in 5.0s")
    plain = "action act_1 fatigue.throttle for cust-0241: Over-contacted: 13 touches in 30d (cap 12)."
    assert redact(plain) == plain
    assert redact("missing header Authorization: Bearer <api key>") == "missing header Authorization: Bearer <api key>"


def test_known_secrets_are_masked_anywhere() -> None:
    assert CONFIGURED_KEY not in redact(f"id={CONFIGURED_KEY}x", known_secrets=[CONFIGURED_KEY])
