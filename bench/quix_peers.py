"""The quixstreams peers of section 1, each run as its own process from its own virtualenv.

    .venv-quix/bin/python -m bench.quix_peers window|count --bootstrap H:P --topic T --expect N --out FILE [...]

quixstreams pins pydantic, pydantic-settings and confluent-kafka below the versions the service runs,
so it cannot share the service's environment: `deploy/bootstrap.sh --dev` installs it into
`.venv-quix` (bench/quix-constraints.txt) and section 1 starts this module with that interpreter
(`QUIX_PYTHON`). Nothing here imports the project's packages; `Marks` (bench/stream_peers.py) needs
only the standard library and orjson.

- `window`: what a Python user writes today for "contacts per customer in the last 30 days": a
  sliding window of 30 days per customer (the message key), counting, in event time (the event's
  `occurred_at`, like our scorer), its state in RocksDB with its changelog topic; `.current()`
  emits every update.
- `count`: the plain State API: a count per customer kept in RocksDB (`state.get`/`state.set`), with
  its changelog topic.

Both read the events topic from the start with a fresh consumer group, JSON-decode each value
(quixstreams' own deserializer) and count each record once the whole pipeline has processed it
(`on_message_processed`). `Marks` notes the time and the process's CPU time (librdkafka's threads
included) at `--warmup` of `--expect` and at `--expect`, writes them to `--out` and the process exits.

The topic must carry `retention.ms` and `retention.bytes` among its configs: quixstreams reads
them (DescribeConfigs) for the changelog topics it creates, and Tansu returns only the configs given
at creation (bench/dataset.py `create_topics` sets both).
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stream_peers import Marks

WINDOW = timedelta(days=30)


def occurred_at_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time of one envelope: its event's `occurred_at` (RFC 3339), in ms."""
    return int(datetime.fromisoformat(value["event"]["occurred_at"]).timestamp() * 1000)


def application(args: argparse.Namespace, marks: Marks) -> Any:
    from quixstreams import Application

    def processed(topic: str, partition: int, offset: int) -> None:
        if marks.seen():
            os._exit(0)

    return Application(
        broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
        state_dir=args.datadir, loglevel=logging.WARNING, on_message_processed=processed,
        # Defaults otherwise (at-least-once, changelog topics, idempotent producer: librdkafka's works on
        # the embedded broker); the fetch wait as the other contenders' (50 ms).
        consumer_extra_config={"fetch.wait.max.ms": 50},
    )


def window(args: argparse.Namespace, marks: Marks) -> tuple[Any, Any]:
    app = application(args, marks)
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json",
                      timestamp_extractor=occurred_at_ms)
    sdf = app.dataframe(topic)
    sdf = sdf.sliding_window(duration_ms=WINDOW).count().current()
    return app, sdf


def count(args: argparse.Namespace, marks: Marks) -> tuple[Any, Any]:
    app = application(args, marks)
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")

    def add_one(value: Any, state: Any) -> int:
        n: int = state.get("count", 0) + 1
        state.set("count", n)
        return n

    sdf = app.dataframe(topic).apply(add_one, stateful=True)
    return app, sdf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("window", "count"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--datadir", type=Path, required=True, help="quixstreams' state directory (RocksDB)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    marks = Marks(args.expect, args.warmup, args.out)
    app, sdf = window(args, marks) if args.kind == "window" else count(args, marks)
    app.run(sdf)


if __name__ == "__main__":
    main()
