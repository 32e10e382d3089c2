"""The dead-letter record round-trips exactly, bytes included, refuses what is not one, and always fits
its topic: the original value is cut to a bound, its size and SHA-256 kept."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from services.deadletter import (
    MAX_LETTER_BYTES,
    MAX_VALUE_BYTES,
    DeadLetter,
    decode_dead_letter,
    encode_dead_letter,
)
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


def test_a_large_value_is_cut_to_the_bound_with_its_size_and_digest() -> None:
    """Issue 17 #1: the letter of a ~900 KB record was 1.2 MB (base64 + metadata), over Kafka's 1 MiB."""
    original = b'{"event_id": "big", "attributes": {"note": "' + b"x" * 900_000 + b'"}}'
    letter = DeadLetter.of("intake.validate", topic="fatigue.intake.v1", partition=0, offset=7, key=b"cust-1",
                           value=original, error=ValueError("not an event"), failed_at_ms=0)
    raw = encode_dead_letter(letter)
    assert len(raw) <= MAX_LETTER_BYTES
    body = json.loads(raw)
    assert body["v"] == 2 and body["truncated"] is True
    assert body["value_size"] == len(original)
    assert body["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert base64.b64decode(body["value_b64"]) == original[:MAX_VALUE_BYTES]
    assert decode_dead_letter(raw) == letter


def test_a_small_value_is_kept_whole_and_not_marked_truncated() -> None:
    letter = DeadLetter.of("scorer.decode", topic="t", partition=1, offset=2, key=b"k", value=b"{}",
                           error=ValueError("x"), failed_at_ms=0)
    body = json.loads(encode_dead_letter(letter))
    assert body["truncated"] is False and base64.b64decode(body["value_b64"]) == b"{}"
    assert (body["value_size"], body["key_size"]) == (2, 1)


def test_the_worst_case_letter_still_fits_its_bound() -> None:
    """Every field at or past its bound: a 10 MB value, a 1 MB key, a long message of characters JSON
    escapes to 12 bytes each, a 249-character topic (Kafka's longest) and a long error class name."""
    error_class = type("E" * 500, (Exception,), {})
    letter = DeadLetter.of("s" * 500, topic="t" * 249, partition=2**31 - 1, offset=2**63 - 1, key=b"\xff" * 2**20,
                           value=b"\x00" * 10_000_000, error=error_class("\U0001f600" * 100_000),
                           failed_at_ms=4_102_444_800_000, timestamp_ms=4_102_444_800_000)
    raw = encode_dead_letter(letter)
    assert len(raw) <= MAX_LETTER_BYTES
    assert decode_dead_letter(raw).truncated


def test_a_stripped_letter_keeps_where_the_original_is_and_what_it_was() -> None:
    letter = DeadLetter.of("intake.forward", topic="t", partition=0, offset=1, key=b"k", value=b"v" * 5000,
                           error=ValueError("x"), failed_at_ms=0)
    stripped = letter.stripped()
    assert stripped.truncated and stripped.value == b""
    assert (stripped.value_size, stripped.value_sha256) == (5000, letter.value_sha256)
    assert decode_dead_letter(encode_dead_letter(stripped)) == stripped
    assert len(encode_dead_letter(stripped)) < 1000


def test_version_1_letters_are_still_read_as_whole() -> None:
    v1 = (b'{"v":1,"stage":"scorer.decode","failed_at":"1970-01-01T00:00:00.000Z","failed_at_ms":0,'
          b'"source":{"topic":"t","partition":0,"offset":5,"timestamp_ms":null},'
          b'"error":{"class":"ValueError","message":"m"},"key_b64":"aw==","value_b64":"e30="}')
    letter = decode_dead_letter(v1)
    assert (letter.key, letter.value, letter.truncated) == (b"k", b"{}", False)
    assert letter.value_size == 2 and letter.value_sha256 == hashlib.sha256(b"{}").hexdigest()


def test_a_letter_of_a_newer_version_is_refused_not_misread() -> None:
    letter = DeadLetter.of("s", topic="t", partition=0, offset=0, key=None, value=b"x", error=ValueError("x"),
                           failed_at_ms=0)
    body = json.loads(encode_dead_letter(letter))
    body["v"] = 3
    with pytest.raises(BadRecord, match="version 3"):
        decode_dead_letter(json.dumps(body).encode())
