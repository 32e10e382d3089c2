"""A customer's state as the value stored in Redis, and back (scorer/core/state_codec.py for the
payload, services/stored_values.py for how it is kept as text)."""

from __future__ import annotations

from scorer.core.state import CustomerState
from scorer.core.state_codec import decode_state, encode_state
from services.stored_values import ValueEncoder, payload_of


def state_value(encoder: ValueEncoder, state: CustomerState) -> bytes:
    """The value to store: the MessagePack payload compressed (`FATIGUE_STORE_FORMAT=zstd`, the
    default), or the state's JSON document (`json`, for reading it with redis-cli)."""
    if encoder.compresses:
        return encoder.encode_payload(encode_state(state))
    return encoder.encode(state.to_json())


def state_of_value(raw: str | bytes) -> CustomerState:
    """The state in a stored value of any format or version; ValueError (StateUnreadable,
    StoredValueUnreadable) naming why when it holds none."""
    return decode_state(payload_of(raw))
