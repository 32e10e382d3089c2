"""The dead-letter record round-trips exactly, bytes included, and refuses what is not one."""

from __future__ import annotations

import json

import pytest

from services.deadletter import DeadLetter, decode_dead_letter, encode_dead_letter
from services.errors import BadRecord


def test_a_dead_letter_round_trips_with_arbitrary_bytes() -> None:
    letter = DeadLetter.of("scorer.decode", topic="fatigue.events.v1", partition=3, offset=99, key=b"cust-1",
                           value=b"\xff\x00{not json", error=ValueError("bad\nvalue  here"),
                           failed_at_ms=1_790_000_000_123)
    raw = encode_dead_letter(letter)
    body = json.loads(raw)
    assert body["error"] == {"class": "ValueError", "message": "bad value here"}
    assert body["failed_at"] == "2026-09-21T14:13:20.123Z"
    assert decode_dead_letter(raw) == letter


def test_a_missing_key_and_value_stay_missing() -> None:
    letter = DeadLetter.of("intake.validate", topic="t", partition=0, offset=0, key=None, value=None,
                           error=RuntimeError("x"), failed_at_ms=0)
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


@pytest.mark.parametrize("raw", [b"", b"{}", b"[1]", b'{"v":1,"stage":"s"}', None,
                                 b'{"v":1,"stage":"s","failed_at_ms":0,"source":{"topic":"t","partition":0,'
                                 b'"offset":0},"error":{"class":"E","message":"m"},"value_b64":"***"}'])
def test_what_is_not_a_dead_letter_is_refused(raw: bytes | None) -> None:
    with pytest.raises(BadRecord):
        decode_dead_letter(raw)
