"""SendGrid Event Webhook: a JSON array of events, optionally signed (ECDSA P-256).

Mapping (docs/adapters.md#sendgrid):

| SendGrid event                      | contract event                                   |
|-------------------------------------|--------------------------------------------------|
| processed, delivered                | touch, email; one per message (see below)        |
| open / click                        | response open / click, in_reply_to the message   |
| unsubscribe, group_unsubscribe      | response unsubscribe                             |
| group_resubscribe                   | response resubscribe                             |
| spamreport                          | response complaint                               |
| bounce, dropped                     | response bounce (the touch never reached them)   |
| deferred, anything else             | ignored (counted): no contact, or not yet        |

A message produces `processed` and then `delivered`; both map to the same touch whose event id is
`msg:<sg_message_id>`, so the second is a duplicate and one email counts once. Responses
keep SendGrid's `sg_event_id` as their event id and point at that touch with `in_reply_to`.
The customer is the `customer_id` custom arg when the sender set one (custom args arrive as
top-level fields of each event), else the `email` through the identity map.

Signature (SendGrid's "Signed Event Webhook"): ECDSA with P-256 and SHA-256 over the bytes of
`X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw request body, sent base64 (DER) in
`X-Twilio-Email-Event-Webhook-Signature`; the verification key is the base64 DER public key
SendGrid shows when signing is turned on. The route also refuses a timestamp further from now than
its freshness window (FATIGUE_SENDGRID_REPLAY_WINDOW_S): a signed request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ingest.adapters.common import MAX_SOURCE_CHARS, Candidate, Mapped, at_most, epoch_to_rfc3339, text
from ingest.identity import normalise_email

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
CUSTOMER_ID_ARG = "customer_id"
"""The custom arg (custom_args / unique_args) that carries our customer id, when the sender sets it."""

TOUCH_EVENTS = frozenset({"processed", "delivered"})
RESPONSE_KINDS = {
    "open": "open",
    "click": "click",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "group_resubscribe": "resubscribe",
    "spamreport": "complaint",
    "bounce": "bounce",
    "dropped": "bounce",
}
_KEPT_FIELDS = ("event", "email", "timestamp", "sg_event_id", "sg_message_id", "category", "reason", "type")


class InvalidKey(ValueError):
    """The configured verification key is not a base64 DER EC public key."""


def load_public_key(key_b64: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_der_public_key(base64.b64decode(key_b64.strip(), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise InvalidKey(f"FATIGUE_SENDGRID_VERIFICATION_KEY is not a base64 DER public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidKey("FATIGUE_SENDGRID_VERIFICATION_KEY is not an elliptic-curve (P-256) public key")
    return key


def verify(key: ec.EllipticCurvePublicKey, signature_b64: str | None, timestamp: str | None, body: bytes) -> bool:
    """True when `signature_b64` signs timestamp + body with the key; False for anything else."""
    if not signature_b64 or not timestamp:
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def fresh(timestamp: str | None, now_s: float, window_s: float) -> bool:
    """The signed timestamp (Unix seconds) is within `window_s` of now, either side."""
    try:
        return abs(now_s - float(timestamp or "")) <= window_s
    except ValueError:
        return False


def map_events(payload: Any, *, max_records: int | None = None) -> Mapped:
    """Contract events for a SendGrid Event Webhook body (a JSON array of event objects): every item
    is a candidate or ignored (with its index and why). More than `max_records`: TooManyRecords."""
    mapped = Mapped()
    items = at_most(payload if isinstance(payload, list) else [payload], max_records)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            mapped.ignored.append((index, "not an event object"))
            continue
        candidate = _map_one(item)
        if isinstance(candidate, str):
            mapped.ignored.append((index, candidate))
        else:
            candidate.index = index
            mapped.candidates.append(candidate)
    return mapped


def _map_one(item: dict[str, Any]) -> Candidate | str:
    kind = text(item.get("event"))
    message_id = text(item.get("sg_message_id"))
    touch_id = f"msg:{message_id}" if message_id else None
    event: dict[str, Any] = {"channel": "email", "occurred_at": epoch_to_rfc3339(item.get("timestamp"))}
    if kind in TOUCH_EVENTS:
        if touch_id is None:
            return f"{kind} without sg_message_id"
        event |= {"event_id": touch_id, "type": "touch"}
    elif kind in RESPONSE_KINDS:
        event_id = text(item.get("sg_event_id"))
        if event_id is None:
            return f"{kind} without sg_event_id"
        event |= {"event_id": event_id, "type": "response", "kind": RESPONSE_KINDS[kind]}
        if touch_id:
            event["in_reply_to"] = touch_id
    else:
        return f"event {kind!r} is not a touch or a response"
    campaign = text(item.get("marketing_campaign_id")) or text(item.get("singlesend_id"))
    if campaign:
        event["campaign_id"] = campaign
    return _with_customer(Candidate(event=event, source=_source(item)), item)


def _with_customer(candidate: Candidate, item: dict[str, Any]) -> Candidate:
    customer_id = text(item.get(CUSTOMER_ID_ARG))
    if customer_id:
        candidate.event["customer_id"] = customer_id
        return candidate
    email = text(item.get("email"))
    if email:
        try:
            candidate.identity = normalise_email(email)
        except ValueError:
            candidate.identity = None
    return candidate


def _source(item: dict[str, Any]) -> dict[str, Any]:
    kept = {k: item[k] for k in _KEPT_FIELDS if k in item}
    return kept if len(repr(kept)) <= MAX_SOURCE_CHARS else {"event": item.get("event")}
