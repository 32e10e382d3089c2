"""From mapped provider items to stored events: find the customer, check, accept, keep the rest.

1. Candidates without a customer id are looked up in the identity map, all in one round trip.
2. Those still without a customer, and those the contract refuses, go to the rejected store (the
   provider gets a 2xx: retrying would not change them); so do events the event log refuses for their
   own properties (too large for the events topic). The answer lists them with their index and
   reason, with the items the mapping ignored: every item of the request is accounted for.
3. The rest go through the shared accept path (ingest/accept.py) as producer `adapter:<provider>`.

The rejected store is written only once the accepted events are acknowledged, so a provider's
retry after a 503 does not list the same rejection twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.accept import AcceptPath
from ingest.adapters.common import Candidate, Mapped
from ingest.adapters.rejected import INVALID, NO_CUSTOMER, RejectedEntry, RejectedStore
from ingest.errors import refusal_text
from ingest.identity import IdentityMap
from services.contract import EventIn, to_ms
from services.errors import RecordRefused
from services.names import ADAPTER_PRODUCER_PREFIX

UNMAPPED = "unmapped"
IGNORED = "ignored"


@dataclass(frozen=True)
class NotStored:
    """An item of the request that made no stored event: its index, `unmapped`, `invalid` or `ignored`, and why."""

    index: int
    outcome: str
    reason: str


@dataclass(frozen=True)
class AdapterOutcome:
    """What became of every item of one request: accepted + duplicates + unmapped + invalid + ignored
    = received, and each item not stored is in `rejected` with its index."""

    accepted: int
    duplicates: int
    unmapped: int
    invalid: int
    ignored: int
    rejected: list[NotStored]
    refused_reasons: tuple[str, ...] = ()
    """The reason of each event the event log refused (counted in `invalid` too)."""

    @property
    def received(self) -> int:
        return self.accepted + self.duplicates + self.unmapped + self.invalid + self.ignored

    def body(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "duplicates": self.duplicates,
                "unmapped": self.unmapped, "invalid": self.invalid, "ignored": self.ignored,
                "rejected": [{"index": item.index, "outcome": item.outcome, "reason": item.reason}
                             for item in self.rejected]}


def producer_of(provider: str) -> str:
    return f"{ADAPTER_PRODUCER_PREFIX}{provider}"


async def resolve_customers(candidates: list[Candidate], identities: IdentityMap) -> None:
    """Fill `customer_id` from the identity map where the provider did not pass it through."""
    pending = [c for c in candidates if "customer_id" not in c.event and c.identity is not None]
    owners = await identities.lookup([c.identity for c in pending if c.identity is not None])
    for candidate, owner in zip(pending, owners, strict=True):
        if owner is not None:
            candidate.event["customer_id"] = owner


def _unmapped(provider: str, candidate: Candidate) -> RejectedEntry:
    identity = candidate.identity
    detail = (f"no customer profile has this {identity.kind}" if identity is not None
              else "the provider sent no customer id and no usable email or phone")
    return RejectedEntry(provider, NO_CUSTOMER, detail, identity.value if identity else None, candidate.event,
                         candidate.source)


async def ingest_mapped(mapped: Mapped, *, provider: str, accept: AcceptPath, identities: IdentityMap,
                        rejected: RejectedStore, now: datetime) -> AdapterOutcome:
    """Store what maps to a customer and passes the contract; raises what `AcceptPath.accept` raises."""
    await resolve_customers(mapped.candidates, identities)
    unmapped = [c for c in mapped.candidates if "customer_id" not in c.event]
    entries = [_unmapped(provider, c) for c in unmapped]
    not_stored = [NotStored(c.index, UNMAPPED, entry.detail) for c, entry in zip(unmapped, entries, strict=True)]
    resolved = [c for c in mapped.candidates if "customer_id" in c.event]
    batch = accept.check([c.event for c in resolved], now=now)
    for rejection in batch.rejected:
        candidate = resolved[rejection.index]
        recipient = candidate.identity.value if candidate.identity else None
        entries.append(RejectedEntry(provider, INVALID, rejection.error, recipient, candidate.event, candidate.source))
        not_stored.append(NotStored(candidate.index, INVALID, rejection.error))
    not_stored += [NotStored(index, IGNORED, reason) for index, reason in mapped.ignored]
    stored = await accept.accept([event for _, event in batch.valid], producer=producer_of(provider), received_at=now)
    candidate_of = {event.event_id: resolved[i] for i, event in batch.valid}
    refused = _refused(provider, stored.refused, candidate_of)
    entries += [entry for _, entry in refused]
    not_stored += [NotStored(index, INVALID, entry.detail) for index, entry in refused]
    await rejected.add(entries, to_ms(now))
    return AdapterOutcome(accepted=stored.count, duplicates=stored.duplicates, unmapped=len(unmapped),
                          invalid=len(batch.rejected) + len(refused), ignored=len(mapped.ignored),
                          rejected=sorted(not_stored, key=lambda item: item.index),
                          refused_reasons=tuple(error.reason for _, error in stored.refused))


def _refused(provider: str, refused: list[tuple[EventIn, RecordRefused]],
             candidate_of: dict[str, Candidate]) -> list[tuple[int, RejectedEntry]]:
    """Events the event log refused for their own properties (too large): kept as invalid, never
    retried; (the item's index, its rejected entry)."""
    entries = []
    for event, error in refused:
        candidate = candidate_of[event.event_id]
        recipient = candidate.identity.value if candidate.identity else None
        entries.append((candidate.index, RejectedEntry(provider, INVALID, refusal_text(error), recipient,
                                                       candidate.event, candidate.source)))
    return entries
