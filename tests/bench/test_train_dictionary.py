"""The dictionary trainer: it learns from the scorer's JSON documents and never overwrites a shipped file."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest

from bench import train_dictionary
from scorer.core.state_codec import decode_state
from services import stored_values


def test_the_samples_are_the_payloads_the_scorer_writes() -> None:
    docs = asyncio.run(train_dictionary.documents(40, seed=3))
    assert len(docs) >= 70  # a state and a decision view per customer with an event or a profile
    states = [decode_state(d) for d in docs if not d.startswith(b"{")]  # MessagePack, not compressed yet
    views = [orjson.loads(d) for d in docs if d.startswith(b"{")]  # JSON, not compressed yet
    assert len(states) == len(views) == len(docs) // 2
    assert {s.customer_id for s in states} == {v["customer_id"] for v in views}
    assert any((s.profile or {}).get("owner_rep_id") for s in states)


def test_a_shipped_dictionary_is_never_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train", "--name", stored_values.CURRENT_DICTIONARY])
    monkeypatch.setattr(train_dictionary, "documents", _no_documents)
    with pytest.raises(SystemExit, match="exists: values stored with it would become unreadable"):
        train_dictionary.main()


async def _no_documents(customers: int, seed: int) -> list[bytes]:
    return []
