"""Dead letters: records a stage could not process, kept with the reason instead of stopping the stream.

Whatever a consumer cannot decode or process (a poison record), or a record the brokers refuse for
its own properties (services/kafka_errors.py), is published to the dead-letter topic
(`names.DEAD_LETTER_TOPIC`) with the original bytes, where it came from and why, and the consumer
goes on with the next record. Only infrastructure outages are retried in place. After a fix,
`fatigue dlq replay` publishes the original bytes back to their source topic.

A dead letter always fits the topic: the original value is kept up to MAX_VALUE_BYTES (64 KiB), the
key up to MAX_KEY_BYTES, the error message up to MAX_ERROR_MESSAGE_CHARS, so an encoded letter is at
most MAX_LETTER_BYTES (128 KiB, well under Kafka's default 1 MiB). A longer value or key is cut to
that prefix and the letter says so (`truncated: true`); the size and SHA-256 of the full original are
always kept, so the original record can be found on its source topic (partition, offset) and checked.
A truncated letter cannot be replayed as it is (`fatigue dlq replay` skips it and says so).

The record on the dead-letter topic: key = the original key (cut like the letter's, so a customer's
letters stay on one partition), value = JSON (version 2; version 1 letters, written before the
bounds, are read as untruncated):

    {"v": 2, "stage": "scorer.decode", "failed_at": "2026-12-01T09:00:00.000Z", "failed_at_ms": ...,
     "source": {"topic": "fatigue.events.v1", "partition": 3, "offset": 1200, "timestamp_ms": ...},
     "error": {"class": "ValidationError", "message": "..."},
     "key_b64": "...", "value_b64": "...", "truncated": false,
     "key_size": 6, "key_sha256": "<hex>", "value_size": 812, "value_sha256": "<hex>"}

A record that never had a source offset (an action the brokers refused) has partition and offset -1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from services.errors import BadRecord, RecordRefused
from services.kafka import AckedProducer
from services.settings import CommonSettings

log = logging.getLogger(__name__)

DEAD_LETTER_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_VALUE_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_NAME_CHARS = 300
"""Bound of the stage, error class and source topic (Kafka's topic names are at most 249 characters)."""
MAX_LETTER_BYTES = 128 * 1024
"""The most an encoded letter takes (tests/services/test_deadletter.py checks the worst case)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record a stage gave up on, and why. `key` and `value` are the original's, cut to the bounds
    (`truncated` then says so); the sizes and SHA-256 digests are the full original's (None: no key / value)."""

    stage: str  # who gave up, e.g. "scorer.decode", "scorer.process", "intake.validate"
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error_class: str
    error_message: str
    failed_at_ms: int
    timestamp_ms: int | None = None  # the source record's Kafka timestamp, when known
    truncated: bool = False
    key_size: int | None = None
    key_sha256: str | None = None
    value_size: int | None = None
    value_sha256: str | None = None

    @classmethod
    def of(cls, stage: str, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
           error: BaseException, failed_at_ms: int, timestamp_ms: int | None = None) -> DeadLetter:
        message = " ".join(str(error).split())[:MAX_ERROR_MESSAGE_CHARS]
        truncated = len(key or b"") > MAX_KEY_BYTES or len(value or b"") > MAX_VALUE_BYTES
        return cls(stage[:MAX_NAME_CHARS], topic[:MAX_NAME_CHARS], partition, offset, _cut(key, MAX_KEY_BYTES),
                   _cut(value, MAX_VALUE_BYTES), type(error).__name__[:MAX_NAME_CHARS], message, failed_at_ms,
                   timestamp_ms, truncated, _size(key), _sha256(key), _size(value), _sha256(value))

    @property
    def identity(self) -> str:
        """The same for every letter of one record at one stage (what a retry must not send twice)."""
        return f"{self.stage}|{self.topic}|{self.partition}|{self.offset}|{self.value_sha256}"

    def stripped(self) -> DeadLetter:
        """This letter without the original value (sizes and digests kept): for a topic whose limit is
        below MAX_LETTER_BYTES."""
        value = None if self.value is None else b""
        return replace(self, value=value, truncated=self.truncated or bool(self.value))


def _cut(data: bytes | None, limit: int) -> bytes | None:
    return None if data is None else data[:limit]


def _size(data: bytes | None) -> int | None:
    return None if data is None else len(data)


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Any, field: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadRecord(f"dead letter: {field} must be a base64 string or null")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"dead letter: {field} is not base64 ({exc})") from exc


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def encode_dead_letter(letter: DeadLetter) -> bytes:
    body = {
        "v": DEAD_LETTER_VERSION,
        "stage": letter.stage,
        "failed_at": _iso_ms(letter.failed_at_ms),
        "failed_at_ms": letter.failed_at_ms,
        "source": {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
                   "timestamp_ms": letter.timestamp_ms},
        "error": {"class": letter.error_class, "message": letter.error_message},
        "key_b64": _b64(letter.key),
        "value_b64": _b64(letter.value),
        "truncated": letter.truncated,
        "key_size": letter.key_size,
        "key_sha256": letter.key_sha256,
        "value_size": letter.value_size,
        "value_sha256": letter.value_sha256,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_dead_letter(raw: bytes | None) -> DeadLetter:
    """The inverse of `encode_dead_letter` (versions 1 and 2); BadRecord when the bytes are not a dead letter."""
    try:
        body = json.loads(raw or b"")
        if body["v"] not in READABLE_VERSIONS:
            raise BadRecord(f"dead letter version {body['v']!r}: this reader knows {READABLE_VERSIONS}; upgrade it")
        source, error = body["source"], body["error"]
        key = _unb64(body.get("key_b64"), "key_b64")
        value = _unb64(body.get("value_b64"), "value_b64")
        letter = DeadLetter(
            stage=str(body["stage"]), topic=str(source["topic"]), partition=int(source["partition"]),
            offset=int(source["offset"]), key=key, value=value, error_class=str(error["class"]),
            error_message=str(error["message"]), failed_at_ms=int(body["failed_at_ms"]),
            timestamp_ms=None if source.get("timestamp_ms") is None else int(source["timestamp_ms"]),
        )
        return _with_originals(letter, body) if body["v"] >= 2 else _untruncated(letter)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BadRecord(f"not a dead letter: {exc!r}") from exc


def _untruncated(letter: DeadLetter) -> DeadLetter:
    """A version 1 letter: the key and value in it are the whole original."""
    return replace(letter, key_size=_size(letter.key), key_sha256=_sha256(letter.key),
                   value_size=_size(letter.value), value_sha256=_sha256(letter.value))


def _with_originals(letter: DeadLetter, body: dict[str, Any]) -> DeadLetter:
    truncated = body.get("truncated", False)
    if not isinstance(truncated, bool):
        raise BadRecord("dead letter: truncated must be true or false")
    return replace(letter, truncated=truncated, key_size=_opt_int(body.get("key_size")),
                   key_sha256=_opt_str(body.get("key_sha256")), value_size=_opt_int(body.get("value_size")),
                   value_sha256=_opt_str(body.get("value_sha256")))


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class DeadLetterSink(Protocol):
    async def publish(self, letters: list[DeadLetter]) -> None:
        """Return once every letter is acknowledged (or, refused even without its value, logged and
        counted); raise BrokerUnavailable (retry in place: letters already acknowledged are not sent
        again) or BrokerMisconfigured (stop: the operator must fix the topic or the client's rights)."""
        ...


def _ignore(_: RecordRefused) -> None:
    return None


class KafkaDeadLetterSink:
    """Publishes dead letters to the dead-letter topic with acks=all (started on first use).

    A letter the brokers refuse (a topic limit below MAX_LETTER_BYTES) is sent again without its value;
    one refused even so is logged as lost (its source record stays on its topic at partition@offset).
    Either way `on_refused` is called (the service's refused-records counter)."""

    def __init__(self, settings: CommonSettings, client_id: str,
                 on_refused: Callable[[RecordRefused], None] = _ignore) -> None:
        self._topic = settings.dead_letter_topic
        self._producer = AckedProducer(settings, client_id, "dead-letter")
        self._on_refused = on_refused

    async def publish(self, letters: list[DeadLetter]) -> None:
        refused = await self._send(letters)
        if not refused:
            return
        stripped = [letters[i].stripped() for i in refused]
        lost = await self._send(stripped, suffix="|stripped")
        for i, error in refused.items():
            self._on_refused(error)
            log.warning("dead letter of %s/%d@%d refused by the broker, sent without its value: %s",
                        letters[i].topic, letters[i].partition, letters[i].offset, error)
        for j, error in lost.items():
            letter = stripped[j]
            log.error("dead letter of %s/%d@%d (%s: %s) lost: refused even without its value: %s", letter.topic,
                      letter.partition, letter.offset, letter.stage, letter.error_message[:300], error)

    async def _send(self, letters: list[DeadLetter], suffix: str = "") -> dict[int, RecordRefused]:
        records = [(letter.key, encode_dead_letter(letter)) for letter in letters]
        return await self._producer.send_all(self._topic, records, [letter.identity + suffix for letter in letters])

    async def close(self) -> None:
        await self._producer.close()


class MemoryDeadLetterSink:
    """Keeps dead letters in a list: for the backtest and unit tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)
