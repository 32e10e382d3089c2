"""The customer states this worker committed last, kept decoded so the next batch need not decode them.

Decoding a stored state (decompress, parse, rebuild the window buckets) is ~50 µs per customer per
batch, about a tenth of the scorer's CPU per event. The owner of a partition is its only writer, so
most states a batch reads are ones this worker wrote itself a batch or two before.

Correctness does not rest on partition ownership:
- **Validated by content.** The batch still reads every state from Redis under its WATCH (the read
  that guards against another writer); an entry is used only when the stored value is exactly the one
  this worker wrote with it. A state written by anyone else since (a zombie worker, a rebalanced
  partition's new owner, an erasure, a hand edit) differs and is decoded from Redis as before.
- **Taken, not shared.** A read takes the entry out; only a successful commit puts the states it
  wrote back. The core mutates states in place, so a batch that fails (a core failure being bisected,
  a commit conflict, an outage, a dry run that never commits) leaves no half-applied state behind: the
  retry decodes the committed value from Redis.

Bounded by entry count (least recently committed evicted first); a decoded state is ~11 KiB of Python
objects for a customer with a month of history, so the default 10,000 entries is ~110 MiB per worker
(`FATIGUE_STATE_CACHE_SIZE`, 0 turns it off).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from scorer.core.state import CustomerState


class StateCache:
    def __init__(self, capacity: int, on_lookup: Callable[[bool], None] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"state cache capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[str | bytes, CustomerState]] = OrderedDict()
        self._on_lookup = on_lookup
        """Told of every lookup: True for a hit (for the scorer's metrics)."""

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_id: str, stored: str | bytes) -> CustomerState | None:
        """The decoded state of `customer_id` if `stored` is the value it was committed as; the entry
        leaves the cache either way."""
        entry = self._entries.pop(customer_id, None)
        hit = entry is not None and entry[0] == stored
        if self._on_lookup is not None and self.capacity:
            self._on_lookup(hit)
        return entry[1] if hit and entry is not None else None

    def put(self, customer_id: str, stored: str | bytes, state: CustomerState) -> None:
        """Remember a state just committed as `stored` (the value as Redis returns it)."""
        if not self.capacity:
            return
        self._entries[customer_id] = (stored, state)
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, customer_id: str) -> None:
        self._entries.pop(customer_id, None)
