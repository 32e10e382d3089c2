"""`fatigue dlq list|replay` against the real broker: letters listed with their reason, replayed
back to their source topic so the scorer counts them after a fix."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer

from fatigue.dlq import Selection, print_letters, read_letters, replay
from services.deadletter import DeadLetter, KafkaDeadLetterSink
from services.settings import CommonSettings

pytestmark = pytest.mark.integration


def letter(topic: str, stage: str, offset: int, value: bytes, failed_at_ms: int) -> DeadLetter:
    return DeadLetter.of(stage, topic=topic, partition=1, offset=offset, key=b"cust-1", value=value,
                         error=ValueError(f"bad {offset}"), failed_at_ms=failed_at_ms)


async def test_letters_are_listed_filtered_and_replayed(common_settings: CommonSettings) -> None:
    settings = common_settings
    source = settings.profiles_topic  # a topic of this test's own: nothing else writes to it here
    now = int(time.time() * 1000)
    sink = KafkaDeadLetterSink(settings, "test")
    await sink.publish([letter(source, "scorer.decode", 7, b'{"first": 1}', now - 60_000),
                        letter(source, "notifier.dispatch", 8, b"\xffraw", now - 30_000),
                        letter(source, "scorer.decode", 9, b'{"third": 3}', now)])
    await sink.close()

    found = await read_letters(settings, Selection())
    assert [f.letter.offset for f in found if f.letter] == [7, 8, 9]
    decode_only = await read_letters(settings, Selection(stage="scorer.decode", since_ms=now - 45_000))
    assert [f.letter.offset for f in decode_only if f.letter] == [9]

    out = io.StringIO()
    print_letters(await read_letters(settings, Selection(stage="notifier.dispatch")), json_lines=True, out=out)
    [line] = out.getvalue().splitlines()
    listed = json.loads(line)
    assert listed["source"] == {"topic": source, "partition": 1, "offset": 8}
    assert listed["error"] == {"class": "ValueError", "message": "bad 8"}

    sent = await replay(settings, [f.letter for f in found if f.letter and f.letter.stage == "scorer.decode"])
    assert sent == 2
    consumer = AIOKafkaConsumer(source, bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    values = sorted(r.value for records in batch.values() for r in records)
    assert values == [b'{"first": 1}', b'{"third": 3}']
    assert {r.key for records in batch.values() for r in records} == {b"cust-1"}


async def test_the_command_lists_and_replays_dry(common_settings: CommonSettings, infra_env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys

    sink = KafkaDeadLetterSink(common_settings, "test")
    await sink.publish([letter(common_settings.events_topic, "scorer.process", 3, b"{}", int(time.time() * 1000))])
    await sink.close()
    env = {**os.environ, **infra_env}
    listed = subprocess.run([sys.executable, "-m", "fatigue.cli", "dlq", "list"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    assert "scorer.process" in listed.stdout and "1 dead letters" in listed.stdout
    dry = subprocess.run([sys.executable, "-m", "fatigue.cli", "dlq", "replay", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert "1 dead letters would be published back" in dry.stdout


async def test_a_truncated_letter_is_listed_as_such_and_never_replayed_cut(
        common_settings: CommonSettings, infra_env: dict[str, str]) -> None:
    """A letter keeps at most 64 KiB of the original value (so it always fits the dead-letter topic);
    publishing that prefix back would be a new, wrong record: replay skips it, counts it and says why."""
    import os
    import subprocess
    import sys

    source = common_settings.profiles_topic  # a topic of this test's own: nothing else writes to it here
    big = b'{"pad": "' + b"x" * 100_000 + b'"}'
    now = int(time.time() * 1000)
    sink = KafkaDeadLetterSink(common_settings, "test")
    await sink.publish([letter(source, "intake.validate", 1, big, now), letter(source, "scorer.decode", 2, b"{}", now)])
    await sink.close()
    env = {**os.environ, **infra_env}
    listed = subprocess.run([sys.executable, "-m", "fatigue.cli", "dlq", "list"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    assert f"TRUNCATED (original: key 6 bytes, sha256 {hashlib.sha256(b'cust-1').hexdigest()}; value " \
           f"{len(big):,} bytes, sha256 {hashlib.sha256(big).hexdigest()})" in listed.stdout
    replayed = subprocess.run([sys.executable, "-m", "fatigue.cli", "dlq", "replay"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
    assert "1 dead letters published back to their source topics; 1 truncated letters skipped" in replayed.stdout
    assert f"skip {source}[1]@1: truncated letter" in replayed.stdout
    consumer = AIOKafkaConsumer(source, bootstrap_servers=common_settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    assert [r.value for records in batch.values() for r in records] == [b"{}"]
