"""What every adapter's mapping returns: candidate events, and the provider items it left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest.identity import Identity

MAX_SOURCE_CHARS = 2000
"""How much of a provider item the rejected store keeps (for an operator to recognise it)."""


@dataclass
class Candidate:
    """A contract-v1 event made from one provider item. `event["customer_id"]` is set when the
    provider passed our id through; otherwise `identity` (the recipient) is looked up."""

    event: dict[str, Any]
    identity: Identity | None = None
    source: dict[str, Any] = field(default_factory=dict)
    """The provider item it came from (kept by the rejected store when no customer is found)."""


@dataclass
class Mapped:
    """The events made from one provider request, and `(item index, reason)` of the items that make
    no event on purpose (e.g. a SendGrid `deferred`: the message is still on its way)."""

    candidates: list[Candidate] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)


def text(value: Any) -> str | None:
    """A non-empty string from a scalar provider field, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        result = str(value).strip()
        return result or None
    return None


def epoch_to_rfc3339(value: Any) -> str | None:
    """Unix seconds (int, float or numeric string) as RFC 3339 UTC; None when it is not a number."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def utc_now_text(now: datetime) -> str:
    return now.astimezone(UTC).isoformat()
