"""Signatures of chat-tool bots that check one (Feishu/Lark and DingTalk custom bots), as pure functions.

Both sign a timestamp with the bot's own secret (shown in the bot's security settings), not the
request body. The caller passes the time.

- Feishu/Lark custom bot, "signature verification" (签名校验),
  https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot: the string
  `"{timestamp}\\n{secret}"` is the HMAC-SHA256 *key*, the message is empty; `sign` is the base64
  of the digest. `timestamp` is in seconds and goes into the JSON body next to `sign`; Feishu
  refuses timestamps more than an hour away from its clock.
- DingTalk custom robot, "加签",
  https://open.dingtalk.com/document/robots/customize-robot-security-settings: HMAC-SHA256 keyed
  with the secret (`SEC…`) over `"{timestamp}\\n{secret}"`, base64, then URL-encoded into the query:
  `…&timestamp={ms}&sign={urlencoded}`. `timestamp` is in milliseconds, within an hour of DingTalk's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode, urlsplit, urlunsplit

from services.names import SECRET_PREFIX


def provider_secret(secret: str) -> str | None:
    """The subscription secret as a chat bot's signing secret, or None when it is not one.

    A generated Standard Webhooks secret (`whsec_…`) means the user did not supply the bot's own
    secret: the bot is then configured without signing (keyword or IP allow-list) and nothing is signed.
    """
    return None if not secret or secret.startswith(SECRET_PREFIX) else secret


def feishu_sign(secret: str, timestamp_s: int) -> str:
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64 of the digest; URL-encoding happens once, in dingtalk_signed_url."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """`url` (which carries `access_token`) with `timestamp` and `sign` appended to its query."""
    parts = urlsplit(url)
    extra = urlencode({"timestamp": timestamp_ms, "sign": dingtalk_sign(secret, timestamp_ms)})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
