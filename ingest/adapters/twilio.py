"""Twilio Messaging webhooks, form-encoded: status callbacks and incoming messages.

Mapping (docs/adapters.md#twilio):

| Twilio request                                     | contract event                                  |
|----------------------------------------------------|-------------------------------------------------|
| status callback, MessageStatus sent / delivered    | touch, sms (event id `msg:<MessageSid>`), To    |
| status callback, MessageStatus undelivered / failed| response bounce, in_reply_to the message, To    |
| other statuses (queued, sending, accepted, …)      | ignored (counted): not sent yet                 |
| incoming message, opt-out keyword                  | response unsubscribe (sms), From                |
| incoming message, opt-in keyword                   | response resubscribe (sms), From                |
| any other incoming message                         | response reply (sms), From                      |

Keywords follow Twilio's default opt-out handling: the whole body, trimmed and case-insensitive,
is one of STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT (opt out) or START, YES, UNSTOP (opt in);
Twilio's own `OptOutType` parameter (STOP / START) wins when present. Twilio sends no event time
on these webhooks: the time the request arrives is used. WhatsApp (`whatsapp:+…`) numbers map to
the number. The customer is the `customer_id` query parameter of the configured callback URL when
set, else the number through the identity map.

Signature (Twilio "Webhooks security"): base64 HMAC-SHA1, keyed with the account auth token, of
the full URL Twilio called (scheme, host, path and query) followed by every POST parameter name
and value, sorted by name, without separators; sent in `X-Twilio-Signature`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from ingest.adapters.common import Candidate, Mapped, text, utc_now_text
from ingest.identity import normalise_phone

SIGNATURE_HEADER = "X-Twilio-Signature"
CUSTOMER_ID_PARAM = "customer_id"
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
TOUCH_STATUSES = frozenset({"sent", "delivered"})
BOUNCE_STATUSES = frozenset({"undelivered", "failed"})
_KEPT_FIELDS = ("MessageSid", "MessageStatus", "ErrorCode", "OptOutType", "From", "To")

Params = Sequence[tuple[str, str]]
"""Form parameters in the order received (a name may repeat)."""


def signature_of(auth_token: bytes, url: str, params: Params) -> str:
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token, data.encode(), hashlib.sha1).digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL as called, and with the default port added or removed (Twilio may sign either)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if default is None:
        return [url]
    if parts.port is None:
        other = parts._replace(netloc=f"{_userinfo(parts.netloc)}{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=f"{_userinfo(parts.netloc)}{host}")
    else:
        return [url]
    return [url, urlunsplit(other)]


def _userinfo(netloc: str) -> str:
    return netloc.rpartition("@")[0] + "@" if "@" in netloc else ""


def verify(auth_token: bytes, url: str, params: Params, signature: str | None) -> bool:
    if not signature:
        return False
    return any(hmac.compare_digest(signature_of(auth_token, variant, params).encode(), signature.encode())
               for variant in url_variants(url))


def _first(params: Params, name: str) -> str | None:
    return next((text(value) for key, value in params if key == name), None)


def _number(value: str | None) -> str | None:
    return value.removeprefix("whatsapp:").strip() if value else None


def map_status(params: Params, customer_id: str | None, now: datetime, default_region: str | None) -> Mapped:
    """A status callback of an outbound message: the touch once it is sent, a bounce if it failed."""
    mapped = Mapped()
    status = (_first(params, "MessageStatus") or _first(params, "SmsStatus") or "").lower()
    sid = _first(params, "MessageSid") or _first(params, "SmsSid")
    if sid is None:
        mapped.ignored.append((0, "no MessageSid"))
        return mapped
    event = {"channel": "sms", "occurred_at": utc_now_text(now)}
    if status in TOUCH_STATUSES:
        event |= {"event_id": f"msg:{sid}", "type": "touch"}
    elif status in BOUNCE_STATUSES:
        event |= {"event_id": f"{status}:{sid}", "type": "response", "kind": "bounce", "in_reply_to": f"msg:{sid}"}
    else:
        mapped.ignored.append((0, f"status {status or 'missing'}: not a sent message"))
        return mapped
    mapped.candidates.append(_with_customer(event, params, "To", customer_id, default_region))
    return mapped


def response_kind(body: str | None, opt_out_type: str | None) -> str:
    """unsubscribe / resubscribe for Twilio's opt-out and opt-in keywords, reply otherwise."""
    keyword = (opt_out_type or "").strip().upper()
    if keyword == "STOP":
        return "unsubscribe"
    if keyword == "START":
        return "resubscribe"
    word = (body or "").strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "unsubscribe"
    if word in OPT_IN_KEYWORDS:
        return "resubscribe"
    return "reply"


def map_inbound(params: Params, customer_id: str | None, now: datetime, default_region: str | None) -> Mapped:
    """An incoming message: a reply, or an opt-out / opt-in keyword."""
    mapped = Mapped()
    sid = _first(params, "MessageSid") or _first(params, "SmsSid")
    if sid is None:
        mapped.ignored.append((0, "no MessageSid"))
        return mapped
    kind = response_kind(_first(params, "Body"), _first(params, "OptOutType"))
    event = {"event_id": sid, "type": "response", "kind": kind, "channel": "sms", "occurred_at": utc_now_text(now)}
    mapped.candidates.append(_with_customer(event, params, "From", customer_id, default_region))
    return mapped


def _with_customer(event: dict[str, str], params: Params, number_param: str, customer_id: str | None,
                   default_region: str | None) -> Candidate:
    candidate = Candidate(event=dict(event), source={k: v for k, v in params if k in _KEPT_FIELDS})
    if customer_id:
        candidate.event["customer_id"] = customer_id
        return candidate
    number = _number(_first(params, number_param))
    if number:
        try:
            candidate.identity = normalise_phone(number, default_region)
        except ValueError:
            candidate.identity = None
    return candidate
