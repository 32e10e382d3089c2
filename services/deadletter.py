"""Dead letters: records a stage could not process, kept with the reason instead of stopping the stream.

Whatever a consumer cannot decode or process (a poison record) is published to the dead-letter
topic (`names.DEAD_LETTER_TOPIC`) with the original bytes, where it came from and why, and the
consumer goes on with the next record. Only infrastructure outages are retried in place. After a
fix, `fatigue dlq replay` publishes the original bytes back to their source topic.

The record on the dead-letter topic: key = the original key (so a customer's letters stay on one
partition), value = JSON:

    {"v": 1, "stage": "scorer.decode", "failed_at": "2026-12-01T09:00:00.000Z",
     "source": {"topic": "fatigue.events.v1", "partition": 3, "offset": 1200, "timestamp_ms": ...},
     "error": {"class": "ValidationError", "message": "..."},
     "key_b64": "...", "value_b64": "..."}
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.errors import BadRecord
from services.kafka import AckedProducer
from services.settings import CommonSettings

DEAD_LETTER_VERSION = 1
MAX_ERROR_MESSAGE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record a stage gave up on, and why."""

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

    @classmethod
    def of(cls, stage: str, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
           error: BaseException, failed_at_ms: int, timestamp_ms: int | None = None) -> DeadLetter:
        message = " ".join(str(error).split())[:MAX_ERROR_MESSAGE_CHARS]
        return cls(stage, topic, partition, offset, key, value, type(error).__name__, message, failed_at_ms,
                   timestamp_ms)


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
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_dead_letter(raw: bytes | None) -> DeadLetter:
    """The inverse of `encode_dead_letter`; BadRecord when the bytes are not a dead letter."""
    try:
        body = json.loads(raw or b"")
        source, error = body["source"], body["error"]
        return DeadLetter(
            stage=str(body["stage"]), topic=str(source["topic"]), partition=int(source["partition"]),
            offset=int(source["offset"]), key=_unb64(body.get("key_b64"), "key_b64"),
            value=_unb64(body.get("value_b64"), "value_b64"), error_class=str(error["class"]),
            error_message=str(error["message"]), failed_at_ms=int(body["failed_at_ms"]),
            timestamp_ms=None if source.get("timestamp_ms") is None else int(source["timestamp_ms"]),
        )
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BadRecord(f"not a dead letter: {exc!r}") from exc


class DeadLetterSink(Protocol):
    async def publish(self, letters: list[DeadLetter]) -> None:
        """Return once every letter is acknowledged; raise BrokerUnavailable otherwise (retry in place)."""
        ...


class KafkaDeadLetterSink:
    """Publishes dead letters to the dead-letter topic with acks=all (started on first use)."""

    def __init__(self, settings: CommonSettings, client_id: str) -> None:
        self._topic = settings.dead_letter_topic
        self._producer = AckedProducer(settings, client_id, "dead-letter")

    async def publish(self, letters: list[DeadLetter]) -> None:
        await self._producer.send_all(self._topic, [(letter.key, encode_dead_letter(letter)) for letter in letters])

    async def close(self) -> None:
        await self._producer.close()


class MemoryDeadLetterSink:
    """Keeps dead letters in a list: for the backtest and unit tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)
