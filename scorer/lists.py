"""Where a customer's state puts them on the lists reps work from (services/customer_lists.py)."""

from __future__ import annotations

from scorer.core import lifecycle
from scorer.core.state import CustomerState
from services.customer_lists import ListEntry


def list_entry_of(state: CustomerState) -> ListEntry | None:
    """The customer's entry on the lists reps work from (scorer/core/lifecycle.py `list_entry`)."""
    found = lifecycle.list_entry(state)
    if found is None:
        return None
    profile = state.profile or {}
    return ListEntry(found[0], found[1], profile.get("owner_rep_id"), profile.get("tier"), profile.get("stage"))
