"""What the API explains about a customer, computed at read time from the scorer's stored state with
the core's own code (scorer/core/views.py `snapshot`): the numbers are as of the request, under the
policy in force for the API (the stored one, else the same FATIGUE_POLICY_FILE as the scorer's).

The API may import the pure core (`scorer.core`: no I/O, no clock) and nothing else of the scorer
(tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Any

from scorer.core.state import CustomerState
from scorer.core.state_codec import decode_state
from scorer.core.views import snapshot
from services.policy.model import Policy
from services.snapshots import SnapshotUnreadable


def explain(payload: bytes, customer_id: str, policy: Policy, now_ms: int) -> dict[str, Any]:
    """The snapshot of GET /v1/customers/{id} (docs/api.md) as of `now_ms`, from the stored state's
    payload (services/snapshots.py `CustomerReader`); SnapshotUnreadable when it is not a state this
    build reads."""
    state = state_of(payload, customer_id)
    try:
        return snapshot(state, now_ms, policy)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise SnapshotUnreadable(customer_id, f"{type(exc).__name__}: {exc}") from exc


def state_of(payload: bytes, customer_id: str) -> CustomerState:
    """The stored state in its payload (any format version: scorer/core/state_codec.py)."""
    try:
        return decode_state(payload)
    except ValueError as exc:
        raise SnapshotUnreadable(customer_id, str(exc)) from exc


def state_document(payload: bytes, customer_id: str) -> dict[str, Any]:
    """The stored state as a JSON document (its fields by name), whatever format it is stored in."""
    return state_of(payload, customer_id).to_json()
