"""The stored state's compact encoding (format version 3, MessagePack): every state the core makes
comes back the same, every older JSON form still reads, and a payload of the wrong shape is refused
naming where, never half-loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core import engine, timeline
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.state_codec import FORMAT_VERSION, StateUnreadable, decode_state, encode_state
from services.durations import DAY_MS, HOUR_MS
from services.policy.model import default_policy

POLICY = default_policy()
V1 = json.loads((Path(__file__).parents[1] / "data" / "states_v1.json").read_text())
START = 1_790_000_000_000

CHANNELS = ["email", "sms", "phone", "wecom"]
KINDS = {"touch": [None, "promo", "value", "transactional"],
         "response": ["reply", "open", "click", "complaint", "unsubscribe"]}


@st.composite
def histories(draw: Any) -> CustomerState:
    """A customer after a random history through the real core: windows, streaks, complaints,
    closed channels, campaigns, a profile, timers evaluated."""
    state = CustomerState("cust-ü-1")
    if draw(st.booleans()):
        engine.apply_profile(state, {"tier": "A", "stage": draw(st.sampled_from(["lead", "customer"])),
                                     "timezone": "Asia/Shanghai", "owner_rep_id": "rep 7"}, START, POLICY)
    at = START
    for n in range(draw(st.integers(0, 40))):
        at += draw(st.integers(0, 5 * DAY_MS))
        type_ = draw(st.sampled_from(["touch", "touch", "response"]))
        event = ContactEvent(f"e{n}", type_, state.customer_id, draw(st.sampled_from(CHANNELS)), at,
                             kind=draw(st.sampled_from(KINDS[type_])),
                             campaign_id=draw(st.sampled_from([None, "spring"])), producer="p")
        engine.apply_event(state, event, at + HOUR_MS, POLICY)
    timeline.advance(state, at + 40 * DAY_MS, POLICY)
    return state


def same(a: CustomerState, b: CustomerState) -> None:
    assert a.to_json() == b.to_json()
    assert {k: (s.fine, s.coarse) for k, s in a.counts.series.items()} == \
        {k: (s.fine, s.coarse) for k, s in b.counts.series.items()}


@settings(max_examples=150, deadline=None)
@given(histories())
def test_every_state_the_core_makes_comes_back_the_same(state: CustomerState) -> None:
    again = decode_state(encode_state(state))
    same(again, state)
    # and it goes on living the same: one more event on both
    event = ContactEvent("next", "touch", state.customer_id, "email", state.clock_ms + DAY_MS, producer="p")
    engine.apply_event(again, event, state.clock_ms + DAY_MS, POLICY)
    engine.apply_event(state, event, state.clock_ms + DAY_MS, POLICY)
    same(again, state)


@settings(max_examples=50, deadline=None)
@given(histories())
def test_the_json_form_of_version_2_still_reads_as_the_same_state(state: CustomerState) -> None:
    payload = json.dumps(state.to_json()).encode()
    same(decode_state(payload), state)
    assert len(encode_state(state)) < len(payload)


@pytest.mark.parametrize("name", sorted(V1))
def test_a_version_1_state_reads_and_is_written_as_version_3(name: str) -> None:
    state = decode_state(json.dumps(V1[name]).encode())
    assert state.to_json() == CustomerState.from_json(V1[name]).to_json()
    payload = encode_state(state)
    assert msgspec.msgpack.decode(payload)[0] == FORMAT_VERSION
    same(decode_state(payload), state)


def _stored(state: CustomerState) -> list[Any]:
    return msgspec.msgpack.decode(encode_state(state))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "says"), [
    (lambda a: a.__setitem__(1, 42), "$[1]"),                       # customer id not a string
    (lambda a: a.__setitem__(13, "soon"), "$[13]"),                 # clock not an integer
    (lambda a: a.__setitem__(5, {"touch|email|-": [{}, {}, {}]}), "$[5]"),  # a series is two maps
    (lambda a: a.__setitem__(6, [[1, "email"]]), "$[6]"),          # a recent touch of two fields
    (lambda a: a.__setitem__(0, 9), "format version 9"),            # from a newer build
    (lambda a: a.__delitem__(slice(20, None)), "Expected `array` of at least length"),
])
def test_a_payload_of_the_wrong_shape_is_refused_naming_where(change: Any, says: str) -> None:
    state = CustomerState("c1")
    engine.apply_event(state, ContactEvent("e", "touch", "c1", "email", START), START, POLICY)
    array = _stored(state)
    change(array)
    with pytest.raises(StateUnreadable, match=None) as refused:
        decode_state(msgspec.msgpack.encode(array))
    assert says in str(refused.value)


@pytest.mark.parametrize("payload", [b"", b"\xdc\x00", b"\xc1", b"{not json", b'["a list"]', b"{}", b"\x92\x03"])
def test_garbage_is_refused_not_a_crash(payload: bytes) -> None:
    with pytest.raises(StateUnreadable):
        decode_state(payload)


def test_a_newer_builds_extra_fields_are_left_aside() -> None:
    """Fields are only appended: an array with more elements (a newer build wrote it) still reads."""
    state = CustomerState("c1")
    engine.apply_event(state, ContactEvent("e", "touch", "c1", "email", START), START, POLICY)
    array = [*_stored(state), "a field of a later version", {"more": 1}]
    same(decode_state(msgspec.msgpack.encode(array)), state)
