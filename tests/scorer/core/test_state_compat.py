"""States written by the previous scorer (JSON version 1) still load and go on living.

`data/states_v1.json` was written by the version-1 core (the commit before the lifecycle) for three
customers: one cooling off after an unanswered streak (replies binned in UTC, profile in New York),
one throttled by the frequency cap, one dormant after its cadence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scorer.core import engine, lifecycle
from scorer.core.state import CustomerState
from scorer.core.views import snapshot
from services.durations import DAY_MS
from services.policy.model import default_policy

POLICY = default_policy()
V1 = json.loads((Path(__file__).parents[1] / "data" / "states_v1.json").read_text())


@pytest.mark.parametrize(("name", "phase", "listed"), [
    ("streak", lifecycle.COOLING_OFF, "cooling_off"),
    ("cap", lifecycle.THROTTLED, "throttled"),
    ("dormant", lifecycle.TO_ACTIVATE, "to_activate"),
])
def test_a_version_1_state_loads_into_its_lifecycle_phase(name: str, phase: str, listed: str) -> None:
    data = V1[name]
    assert data["v"] == 1
    state = CustomerState.from_json(data)
    assert state.phase == phase and state.status == data["status"]
    assert state.phase_since_ms == data["status_since_ms"]
    entry = lifecycle.list_entry(state)
    assert entry is not None and entry[0] == listed
    again = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.to_json() == state.to_json() and again.to_json()["v"] == 2
    view = snapshot(state, state.clock_ms, POLICY)
    assert view["lifecycle"]["state"] == phase and view["lifecycle"]["list"] == listed


def test_version_1_reply_hours_move_to_local_time_as_version_1_showed_them() -> None:
    """Replies at 15:13 UTC, Monday to Thursday in September: 11:13 in New York (summer time)."""
    state = CustomerState.from_json(V1["streak"])
    assert state.response_hours == {"11": 1, "35": 1, "59": 1, "83": 1}  # Mon..Thu 11:00 local
    assert engine.next_step(state, state.clock_ms, POLICY)[1] == ("Mon 11:00", "America/New_York")


def test_a_version_1_cooling_off_customer_is_re_engaged_after_the_rest() -> None:
    state = CustomerState.from_json(V1["streak"])
    due = engine.next_due_ms(state, POLICY)
    assert due is not None and due <= state.last_touch_ms + 14 * DAY_MS
    actions = []
    at = due
    while at is not None and at <= state.clock_ms + 20 * DAY_MS and not actions:
        actions = engine.on_due(state, at, POLICY)
        at = engine.next_due_ms(state, POLICY)
    (action,) = actions
    assert action["type"] == "fatigue.re_engage" and "rested 14 days" in action["suggestion"]
    assert action["best_time"] == {"local": "Mon 11:00", "timezone": "America/New_York"}
