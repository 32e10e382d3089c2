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
    index: int = 0
    """Its position among the request's items (0 for providers that send one item per request)."""


@dataclass
class Mapped:
    """The events made from one provider request, and `(item index, reason)` of the items that make
    no event on purpose (e.g. a SendGrid `deferred`: the message is still on its way)."""

    candidates: list[Candidate] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)

    @property
    def received(self) -> int:
        """Items of the request: each is a candidate or ignored, none is left out."""
        return len(self.candidates) + len(self.ignored)


class TooManyRecords(ValueError):
    """A request carries more items than one request may: it is refused whole, nothing is ingested
    (never a part of it: what a provider or a client is told must hold for every item it sent)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} records in one request; at most {limit} allowed")
        self.count = count
        self.limit = limit


def at_most(items: list[Any], limit: int | None) -> list[Any]:
    """`items` when there are no more than `limit` (None: no limit); TooManyRecords otherwise."""
    if limit is not None and len(items) > limit:
        raise TooManyRecords(len(items), limit)
    return items


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
