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

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.errors import BadRecord, BrokerUnavailable
from services.kafka import make_producer
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
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(self._settings, client_id=self._client_id)
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise BrokerUnavailable(f"cannot start the dead-letter producer: {exc}") from exc
            self._producer = producer
        return self._producer

    async def publish(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        producer = await self._started()
        topic = self._settings.dead_letter_topic
        try:
            futures = [await producer.send(topic, key=letter.key, value=encode_dead_letter(letter))
                       for letter in letters]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.kafka_request_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"dead letters were not acknowledged by the broker: {exc!r}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class MemoryDeadLetterSink:
    """Keeps dead letters in a list: for the backtest and unit tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)
