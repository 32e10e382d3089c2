"""Stored states and views: JSON or a base64 zstd frame with the shipped dictionary (pure, no Redis)."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from pydantic import ValidationError

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.state_codec import decode_state, encode_state
from scorer.core.views import decision_view, snapshot
from services import stored_values
from services.durations import DAY_MS, HOUR_MS
from services.policy.model import default_policy
from services.settings import ScorerSettings
from services.snapshots import SnapshotUnreadable, parse_snapshot
from services.stored_values import StoredValueUnreadable, ValueEncoder, json_text, loads, payload_of, zstd

NOW = 1_790_000_000_000


def customer(n: int, touches: int = 12) -> CustomerState:
    """A customer of the real core with a month of touches and some replies."""
    policy = default_policy()
    state = CustomerState(f"cust-{n}")
    engine.apply_profile(state, {"stage": "prospect", "owner_rep_id": f"rep-{n % 7}", "tier": "B"}, NOW, policy)
    for i in range(touches):
        at = NOW - (touches - i) * 2 * DAY_MS
        channel = ("email", "sms", "phone")[i % 3]
        engine.apply_event(state, ContactEvent(f"t{n}-{i}", "touch", state.customer_id, channel, at, kind="value"),
                           NOW, policy)
        if i % 3 == 0:
            engine.apply_event(state, ContactEvent(f"r{n}-{i}", "response", state.customer_id, channel,
                                                   at + HOUR_MS, kind="reply"), NOW, policy)
    return state


def documents() -> list[dict]:
    docs: list[dict] = []
    for n in range(20):
        state = customer(n, touches=3 + n)
        docs += [state.to_json(), snapshot(state, NOW, default_policy())]
    return docs


@pytest.mark.parametrize("store_format", stored_values.STORE_FORMATS)
def test_every_document_round_trips_in_either_format(store_format: str) -> None:
    encoder = ValueEncoder(store_format)  # type: ignore[arg-type]
    for doc in documents():
        value = encoder.encode(doc)
        assert loads(value) == orjson.loads(orjson.dumps(doc))
        assert loads(value.decode()) == loads(value)  # Redis answers text (decode_responses=True)


def test_a_compressed_value_is_text_a_third_of_the_json_and_names_its_dictionary() -> None:
    """What the scorer writes: a state's MessagePack payload and a decision view, each compressed to
    a third of the JSON the state or view would take, as base64 text naming the dictionary."""
    encoder = ValueEncoder("zstd")
    for n in range(20):
        state = customer(n, touches=3 + n)
        view = decision_view(state, NOW, default_policy())
        for json_form, value in ((orjson.dumps(state.to_json()), encoder.encode_payload(encode_state(state))),
                                 (orjson.dumps(view), encoder.encode(view))):
            assert value.startswith(stored_values.FRAME_PREFIX)
            value.decode("ascii")  # base64: safe for a decode_responses client
            frame = base64.b64decode(value, validate=True)
            assert zstd.get_frame_info(frame).dictionary_id != 0
            assert len(value) < len(json_form) * 0.36, (len(value), len(json_form))
        assert decode_state(payload_of(encoder.encode_payload(encode_state(state)))).to_json() == state.to_json()


def test_a_binary_payload_is_stored_compressed_only_and_loads_refuses_it() -> None:
    state = customer(1)
    with pytest.raises(ValueError, match="compressed only"):
        ValueEncoder("json").encode_payload(encode_state(state))
    with pytest.raises(StoredValueUnreadable, match="binary payload"):
        loads(ValueEncoder("zstd").encode_payload(encode_state(state)))


def test_the_json_format_writes_readable_json() -> None:
    doc = documents()[1]
    assert json.loads(ValueEncoder("json").encode(doc)) == orjson.loads(orjson.dumps(doc))


def test_json_written_before_compression_existed_is_read_as_is() -> None:
    assert loads('{"customer_id": "c1", "n": 1}') == {"customer_id": "c1", "n": 1}
    assert json_text(b'{"a":1}') == b'{"a":1}'
    assert loads(' {"a": [1, 2]}') == {"a": [1, 2]}


def test_json_with_nan_written_by_pythons_json_is_still_read() -> None:
    value = loads('{"x": NaN}')
    assert value["x"] != value["x"]


def test_a_frame_without_a_dictionary_is_read() -> None:
    frame = zstd.compress(b'{"plain": true}')
    assert loads(base64.b64encode(frame)) == {"plain": True}


def test_a_frame_of_a_dictionary_this_build_does_not_ship_names_its_id() -> None:
    samples = [orjson.dumps({"k": i, "other": "x" * (i % 13), "list": list(range(i % 9))}) for i in range(2000)]
    foreign = zstd.train_dict(samples, 1024)
    frame = zstd.ZstdCompressor(3, zstd_dict=foreign).compress(samples[5], zstd.ZstdCompressor.FLUSH_FRAME)
    with pytest.raises(StoredValueUnreadable, match=f"dictionary id {foreign.dict_id}.*does not ship"):
        loads(base64.b64encode(frame))


@pytest.mark.parametrize("value", [
    b"KLUv!!!!",  # not base64
    b"KLUv/QBYAQAAeyJh",  # a frame cut short
    base64.b64encode(b"\x28\xb5\x2f\xfd" + b"\x00" * 12),  # the magic number, then nothing valid
])
def test_a_corrupt_compressed_value_is_unreadable_not_a_crash(value: bytes) -> None:
    with pytest.raises(StoredValueUnreadable):
        loads(value)


def test_bytes_after_the_frame_are_refused() -> None:
    frame = ValueEncoder("zstd").encode({"a": 1})
    with pytest.raises(StoredValueUnreadable, match="after the zstd frame"):
        loads(base64.b64encode(base64.b64decode(frame) + b"junk"))


def test_a_value_that_would_decompress_beyond_the_bound_is_refused() -> None:
    bomb = base64.b64encode(zstd.compress(b" " * (stored_values.MAX_DOCUMENT_BYTES + 1)))
    assert len(bomb) < 4096
    with pytest.raises(StoredValueUnreadable, match="larger than"):
        loads(bomb)


def test_an_unknown_format_is_refused_at_construction_and_in_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="store format must be one of zstd, json"):
        ValueEncoder("lz4")  # type: ignore[arg-type]
    monkeypatch.setenv("FATIGUE_STORE_FORMAT", "lz4")
    with pytest.raises(ValidationError, match="store_format"):
        ScorerSettings()
    monkeypatch.setenv("FATIGUE_STORE_FORMAT", "json")
    assert ScorerSettings().store_format == "json"
    monkeypatch.delenv("FATIGUE_STORE_FORMAT")
    assert ScorerSettings().store_format == "zstd"


def test_the_shipped_dictionary_is_the_current_one_and_frames_name_it() -> None:
    shipped = stored_values._dictionaries()
    assert stored_values.CURRENT_DICTIONARY in shipped
    frame = base64.b64decode(ValueEncoder().encode({"a": 1}))
    assert zstd.get_frame_info(frame).dictionary_id == shipped[stored_values.CURRENT_DICTIONARY].dict_id


@pytest.mark.parametrize("raw", ["{broken", "[1, 2]", "KLUv!!!!"])
def test_an_unreadable_snapshot_names_the_customer_and_why(raw: str) -> None:
    with pytest.raises(SnapshotUnreadable, match="the stored state of 'c9' is unreadable: ") as caught:
        parse_snapshot(raw, "c9")
    assert caught.value.customer_id == "c9"


def test_a_state_stored_by_the_previous_version_still_reads() -> None:
    """Before format version 3 a state was its JSON document compressed with `fatigue-1`: read as the
    same state (and rewritten as version 3 with the current dictionary at its next commit)."""
    state = customer(3)
    old = ValueEncoder("zstd", dictionary="fatigue-1").encode(state.to_json())
    assert stored_values.CURRENT_DICTIONARY != "fatigue-1"
    assert decode_state(payload_of(old)).to_json() == state.to_json()
