"""The dictionary trainer: it learns from the scorer's JSON documents and never overwrites a shipped file."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest

from bench import train_dictionary
from services import stored_values


def test_the_samples_are_the_json_documents_the_scorer_writes() -> None:
    docs = asyncio.run(train_dictionary.documents(40, seed=3))
    assert len(docs) >= 70  # a state and a decision view per customer with an event or a profile
    parsed = [orjson.loads(d) for d in docs]  # JSON, not already-compressed values
    assert all("customer_id" in p for p in parsed)
    states, views = [p for p in parsed if "clock_ms" in p], [p for p in parsed if "weekly" in p]
    assert len(states) == len(views) == len(parsed) // 2
    assert any((p.get("profile") or {}).get("owner_rep_id") for p in parsed)


def test_a_shipped_dictionary_is_never_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train", "--name", stored_values.CURRENT_DICTIONARY])
    monkeypatch.setattr(train_dictionary, "documents", _no_documents)
    with pytest.raises(SystemExit, match="exists: values stored with it would become unreadable"):
        train_dictionary.main()


async def _no_documents(customers: int, seed: int) -> list[bytes]:
    return []
