"""Mailgun webhooks: one JSON body per event, `{"signature": {...}, "event-data": {...}}`.

Mapping (docs/adapters.md#mailgun):

| Mailgun event (`event-data.event`) | contract event                                        |
|------------------------------------|-------------------------------------------------------|
| delivered                          | touch, email (event id `msg:<Message-Id>`)            |
| opened / clicked                   | response open / click, in_reply_to the message        |
| unsubscribed                       | response unsubscribe                                  |
| complained                         | response complaint                                    |
| failed, severity permanent         | response bounce                                       |
| failed, severity temporary; others | ignored (counted): Mailgun is still trying            |

Responses keep Mailgun's event `id` as event id. The customer is the `customer_id` user variable
(`v:customer_id` when sending) when present, else `recipient` through the identity map.

Signature (Mailgun "Securing webhooks"): hex HMAC-SHA256, keyed with the HTTP webhook signing
key, of `signature.timestamp` followed by `signature.token`. The route also refuses a timestamp
outside the replay window and a token seen before (kept in Redis for the window).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ingest.adapters.common import MAX_SOURCE_CHARS, Candidate, Mapped, epoch_to_rfc3339, text
from ingest.identity import normalise_email

CUSTOMER_ID_VARIABLE = "customer_id"
_KEPT_FIELDS = ("event", "id", "timestamp", "recipient", "severity", "reason")
RESPONSE_KINDS = {"opened": "open", "clicked": "click", "unsubscribed": "unsubscribe", "complained": "complaint"}


def signature_of(signing_key: bytes, timestamp: str, token: str) -> str:
    return hmac.new(signing_key, (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify(signing_key: bytes, signature: Any) -> bool:
    """True when the body's `signature` object is Mailgun's for this key (timing-safe compare)."""
    if not isinstance(signature, dict):
        return False
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str | int) for v in (timestamp, token, given)):
        return False
    expected = signature_of(signing_key, str(timestamp), str(token))
    return hmac.compare_digest(expected.encode(), str(given).lower().encode())


def fresh(signature: dict[str, Any], now_s: float, window_s: float) -> bool:
    """The signature's timestamp is within `window_s` of now (either side)."""
    try:
        return abs(now_s - float(signature["timestamp"])) <= window_s
    except (KeyError, TypeError, ValueError):
        return False


def map_event(body: Any) -> Mapped:
    """Contract events for one Mailgun webhook body."""
    mapped = Mapped()
    data = body.get("event-data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        mapped.ignored.append((0, "no event-data object"))
        return mapped
    candidate = _map_data(data)
    if isinstance(candidate, str):
        mapped.ignored.append((0, candidate))
    else:
        mapped.candidates.append(candidate)
    return mapped


def _message_id(data: dict[str, Any]) -> str | None:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    return text(headers.get("message-id")) if isinstance(headers, dict) else None


def _map_data(data: dict[str, Any]) -> Candidate | str:
    kind = text(data.get("event"))
    message_id = _message_id(data)
    touch_id = f"msg:{message_id}" if message_id else None
    event: dict[str, Any] = {"channel": "email", "occurred_at": epoch_to_rfc3339(data.get("timestamp"))}
    if kind == "delivered":
        if touch_id is None:
            return "delivered without message.headers.message-id"
        event |= {"event_id": touch_id, "type": "touch"}
    else:
        response_kind = RESPONSE_KINDS.get(kind or "")
        if kind == "failed":
            if text(data.get("severity")) != "permanent":
                return "a temporary failure: Mailgun retries the delivery"
            response_kind = "bounce"
        if response_kind is None:
            return f"event {kind!r} is not a touch or a response"
        event_id = text(data.get("id"))
        if event_id is None:
            return f"{kind} without id"
        event |= {"event_id": event_id, "type": "response", "kind": response_kind}
        if touch_id:
            event["in_reply_to"] = touch_id
    return _with_customer(Candidate(event=event, source=_source(data)), data)


def _with_customer(candidate: Candidate, data: dict[str, Any]) -> Candidate:
    variables = data.get("user-variables")
    customer_id = text(variables.get(CUSTOMER_ID_VARIABLE)) if isinstance(variables, dict) else None
    if customer_id:
        candidate.event["customer_id"] = customer_id
        return candidate
    recipient = text(data.get("recipient"))
    if recipient:
        try:
            candidate.identity = normalise_email(recipient)
        except ValueError:
            candidate.identity = None
    return candidate


def _source(data: dict[str, Any]) -> dict[str, Any]:
    kept = {k: data[k] for k in _KEPT_FIELDS if k in data}
    return kept if len(repr(kept)) <= MAX_SOURCE_CHARS else {"event": data.get("event")}
