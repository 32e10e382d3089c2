"""The states of a worker's customers, decoded, as it last committed them.

The worker that owns a partition is the only writer of its customers' states (the partition's epoch
fences any other: scorer/partition_store.py), so what it committed is what Redis holds: a batch needs
to read from Redis only the customers it has not seen lately (or evicted). Decoding a stored state
(decompress, parse, rebuild the window buckets) costs ~50 µs per customer, a good part of the
scorer's CPU per event otherwise.

- **Taken, not shared.** A batch takes its customers out; only a successful commit puts them back.
  The core mutates states in place, so a batch that fails (a core failure being bisected, an outage,
  a dry run that never commits) leaves no half-applied state behind: the retry decodes the committed
  value from Redis.
- **Per partition.** A partition given up (a rebalance, fenced) takes its customers out with it: a
  later owner may change them.
- **Bounded** by entry count, least recently committed out first; a decoded state is ~11 KiB of
  Python objects for a customer with a month of history, so the default 10,000 entries is ~110 MiB per
  worker (`FATIGUE_STATE_CACHE_SIZE`, 0 turns it off).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from scorer.core.state import CustomerState
from services.customer_lists import ListEntry


@dataclass
class CachedCustomer:
    """One customer as committed: its partition, its state (None: none stored) and its list entry."""

    partition: int
    state: CustomerState | None
    entry: ListEntry | None


class StateCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"state cache capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedCustomer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_id: str) -> CachedCustomer | None:
        """The customer as committed last, if kept; it leaves the cache either way."""
        return self._entries.pop(customer_id, None)

    def put(self, customer_id: str, customer: CachedCustomer) -> None:
        """Remember a customer just committed."""
        if not self.capacity:
            return
        self._entries[customer_id] = customer
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, customer_id: str) -> None:
        self._entries.pop(customer_id, None)

    def forget_partition(self, partition: int) -> None:
        """Every customer of a partition leaves (it was given up, or claimed anew)."""
        for customer_id in [c for c, cached in self._entries.items() if cached.partition == partition]:
            del self._entries[customer_id]
