"""`fatigue dlq list|replay`: read the dead-letter topic, and publish letters back after a fix.

Every consumer (scorer, notifier, Kafka intake) sends what it cannot process to the dead-letter
topic with the original bytes and the reason (services/deadletter.py). `list` shows them, newest
last; `replay` publishes the original key and value of the selected letters to their source
topic (acks=all), where they are processed again like any record. Replaying twice is harmless
for events (the scorer counts an event id once) and for profiles (a profile replaces the last).
A truncated letter (an original value over the letter's 64 KiB bound) holds only the start of the
value: it is never replayed, `replay` skips it and counts it, and the original stays findable by
its source position, size and SHA-256.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.deadletter import DeadLetter, decode_dead_letter
from services.errors import BadRecord, BrokerUnavailable, RecordRefused
from services.kafka import kafka_security_kwargs, make_producer, send_each
from services.kafka_errors import as_fatigue_error
from services.settings import CommonSettings

log = logging.getLogger(__name__)

IDLE_POLLS = 2
POLL_MS = 500


@dataclass(frozen=True)
class Selection:
    stage: str | None = None
    topic: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int | None = None

    def wants(self, letter: DeadLetter) -> bool:
        return ((self.stage is None or letter.stage == self.stage)
                and (self.topic is None or letter.topic == self.topic)
                and (self.since_ms is None or letter.failed_at_ms >= self.since_ms)
                and (self.until_ms is None or letter.failed_at_ms < self.until_ms))


@dataclass(frozen=True)
class Found:
    position: str  # where the letter sits on the dead-letter topic: partition@offset
    letter: DeadLetter | None
    problem: str | None = None  # a record on the topic that is not a dead letter


async def read_letters(settings: CommonSettings, selection: Selection) -> list[Found]:
    """Every letter on the dead-letter topic that `selection` wants, in (partition, offset) order.
    Reads to the end of each partition (the fetch high watermark) without joining a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                request_timeout_ms=int(settings.kafka_request_timeout_s * 1000),
                                **kafka_security_kwargs(settings))
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerUnavailable(f"cannot reach Kafka: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        tps = [TopicPartition(settings.dead_letter_topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return await _drain(consumer, tps, selection)
    finally:
        await consumer.stop()


async def _drain(consumer: AIOKafkaConsumer, tps: list[TopicPartition], selection: Selection) -> list[Found]:
    found: list[Found] = []
    idle = 0
    while idle < IDLE_POLLS:
        batch = await consumer.getmany(*tps, timeout_ms=POLL_MS)
        if not batch:
            idle += 1
            continue
        idle = 0
        for tp, records in sorted(batch.items(), key=lambda item: item[0].partition):
            for record in records:
                found += _select(f"{tp.partition}@{record.offset}", record.value, selection)
        if selection.limit is not None and len(found) >= selection.limit:
            return found[: selection.limit]
    return found


def _select(position: str, value: bytes | None, selection: Selection) -> list[Found]:
    try:
        letter = decode_dead_letter(value)
    except BadRecord as exc:
        return [Found(position, None, str(exc))]
    return [Found(position, letter)] if selection.wants(letter) else []


def _report_refusal(letter: DeadLetter, error: RecordRefused) -> None:
    log.warning("letter of %s[%d]@%d not replayed: %s", letter.topic, letter.partition, letter.offset, error)


async def replay(settings: CommonSettings, letters: Iterable[DeadLetter],
                 on_refused: Callable[[DeadLetter, RecordRefused], None] = _report_refusal) -> int:
    """Publish each whole letter's original key and value to its source topic; how many were acknowledged.

    A truncated letter (its value cut to the letter's bound) is never published: it is skipped here, and
    `run_replay` says so. A letter whose record the source topic refuses for its own properties (too
    large) is reported to `on_refused` and the others go on. Raises BrokerUnavailable (an outage: run
    again; letters already published are published again, which replaying allows) or BrokerMisconfigured.
    """
    by_topic: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        if not letter.truncated:
            by_topic.setdefault(letter.topic, []).append(letter)
    producer = make_producer(settings, "fatigue-dlq-replay")
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise as_fatigue_error(exc, "cannot start the replay producer") from exc
    try:
        acked = 0
        for topic, chosen in by_topic.items():
            sent = await send_each(producer, topic, [(letter.key, letter.value) for letter in chosen],
                                   timeout_s=settings.kafka_request_timeout_s * max(1, len(chosen)),
                                   limit_bytes=settings.kafka_max_request_bytes)
            if sent.failure is not None:
                raise sent.failure
            for index, error in sorted(sent.refused.items()):
                on_refused(chosen[index], error)
            acked += len(sent.acked)
        return acked
    finally:
        await producer.stop()


def describe(found: Found) -> str:
    if found.letter is None:
        return f"{found.position}  (not a dead letter: {found.problem})"
    letter = found.letter
    value = letter.value or b""
    preview = value[:80].decode("utf-8", "replace").replace("\n", " ")
    cut = f"  TRUNCATED (original: {_original(letter)})" if letter.truncated else ""
    return (f"{found.position}  {_iso(letter.failed_at_ms)}  {letter.stage:<17} {letter.topic}[{letter.partition}]"
            f"@{letter.offset}  {letter.error_class}: {letter.error_message[:160]}  value={preview!r}{cut}")


def as_json(found: Found) -> str:
    if found.letter is None:
        return json.dumps({"position": found.position, "problem": found.problem})
    letter = found.letter
    return json.dumps({
        "position": found.position, "stage": letter.stage, "failed_at": _iso(letter.failed_at_ms),
        "source": {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset},
        "error": {"class": letter.error_class, "message": letter.error_message},
        "key": None if letter.key is None else letter.key.decode("utf-8", "replace"),
        "value": None if letter.value is None else letter.value.decode("utf-8", "replace"),
        "truncated": letter.truncated, "key_size": letter.key_size, "key_sha256": letter.key_sha256,
        "value_size": letter.value_size, "value_sha256": letter.value_sha256,
    }, ensure_ascii=False)


def _iso(ms: int) -> str:
    from services.contract import from_ms

    moment = from_ms(ms)
    assert moment is not None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def print_letters(found: list[Found], *, json_lines: bool, out: TextIO = sys.stdout) -> None:
    for item in found:
        out.write((as_json(item) if json_lines else describe(item)) + "\n")
    if not json_lines:
        out.write(f"{sum(1 for f in found if f.letter)} dead letters\n")


def run_list(settings: CommonSettings, selection: Selection, *, json_lines: bool, out: TextIO = sys.stdout) -> int:
    found = asyncio.run(read_letters(settings, selection))
    print_letters(found, json_lines=json_lines, out=out)
    return len(found)


def run_replay(settings: CommonSettings, selection: Selection, *, dry_run: bool, out: TextIO = sys.stdout) -> int:
    found = [f.letter for f in asyncio.run(read_letters(settings, selection)) if f.letter is not None]
    letters = [letter for letter in found if not letter.truncated]
    truncated = [letter for letter in found if letter.truncated]
    for letter in truncated:
        out.write(f"skip {_where(letter)}: truncated letter, the original ({_original(letter)}) is not in it; "
                  "republish it from its source topic\n")
    verb = "would replay" if dry_run else "replay"
    for letter in letters:
        out.write(f"{verb} {_where(letter)} ({letter.stage}: {letter.error_class})\n")
    skipped = f"; {len(truncated)} truncated letters skipped (not replayable as they are)" if truncated else ""
    if dry_run:
        out.write(f"{len(letters)} dead letters would be published back (dry run: nothing sent){skipped}\n")
        return len(letters)

    def refused(letter: DeadLetter, error: RecordRefused) -> None:
        out.write(f"refused {_where(letter)}: {error}\n")

    sent = asyncio.run(replay(settings, letters, on_refused=refused))
    out.write(f"{sent} dead letters published back to their source topics{skipped}\n")
    return sent


def _where(letter: DeadLetter) -> str:
    return f"{letter.topic}[{letter.partition}]@{letter.offset}"


def _original(letter: DeadLetter) -> str:
    parts = [f"{what} {size:,} bytes, sha256 {digest}"
             for what, size, digest in (("key", letter.key_size, letter.key_sha256),
                                        ("value", letter.value_size, letter.value_sha256)) if size is not None]
    return "; ".join(parts) or "no key, no value"
