"""The ceiling and the peers our scorer is compared with, each run as its own process.

    python -m bench.stream_peers ceiling|bare|naive --bootstrap H:P --topic T --expect N --out FILE [...]

- `ceiling`: a raw aiokafka consumer, `getmany` in a loop, each value JSON-decoded (orjson): what
  reading the events costs at the least.
- `bare`: a Faust agent iterating the stream and doing nothing: Faust's own cost per event.
- `naive`: the peer a user writes in an afternoon: a Faust agent that decodes each event and counts
  it per customer in a changelog-backed Faust Table.

Each counts the records it saw; at `--warmup` of `--expect` it notes the time and its own CPU
time, at `--expect` it notes them again, writes both to `--out` as JSON and exits. The rate and
CPU per event are taken between the two marks, so start-up and the group join are not in them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import orjson


class Marks:
    def __init__(self, expect: int, warmup: float, out: Path) -> None:
        self.expect = expect
        self.warm_at = max(1, int(expect * warmup))
        self.out = out
        self.count = 0
        self.warm: tuple[float, float, int] | None = None

    def seen(self, n: int = 1) -> bool:
        """Count `n` records; True once `expect` were seen (the results are written)."""
        self.count += n
        if self.warm is None and self.count >= self.warm_at:
            self.warm = (time.monotonic(), time.process_time(), self.count)
        if self.count >= self.expect:
            assert self.warm is not None
            t, cpu, n0 = self.warm
            result = {"warm_t": t, "warm_cpu": cpu, "warm_n": n0, "end_t": time.monotonic(),
                      "end_cpu": time.process_time(), "end_n": self.count}
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(self.out)
            return True
        return False


async def ceiling(args: argparse.Namespace, marks: Marks) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            n = 0
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                    n += 1
            if n and marks.seen(n):
                return
    finally:
        await consumer.stop()


def faust_app(args: argparse.Namespace) -> Any:
    from scorer.transport import TunedApp

    app = TunedApp(
        args.group, broker=f"kafka://{args.bootstrap}", value_serializer="raw", key_serializer="raw",
        topic_partitions=args.partitions, broker_session_timeout=6, broker_heartbeat_interval=1,
        broker_rebalance_timeout=5, consumer_auto_offset_reset="earliest", web_enabled=False,
        datadir=args.datadir, store="memory://", topic_disable_leader=True,
    )
    app.fetch_max_wait_ms = 50
    return app


def bare(args: argparse.Namespace, marks: Marks) -> Any:
    app = faust_app(args)
    source = app.topic(args.topic, key_type=bytes, value_type=bytes)

    @app.agent(source, name="bare")
    async def agent(stream: Any) -> None:
        async for _ in stream:
            if marks.seen():
                os._exit(0)

    return app


def naive(args: argparse.Namespace, marks: Marks) -> Any:
    app = faust_app(args)
    source = app.topic(args.topic, key_type=bytes, value_type=bytes)
    counts = app.Table("counts", default=int, partitions=args.partitions)

    @app.agent(source, name="naive")
    async def agent(stream: Any) -> None:
        async for value in stream:
            event = json.loads(value)["event"]
            counts[event["customer_id"]] += 1
            if marks.seen():
                os._exit(0)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("ceiling", "bare", "naive"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--datadir", default="/tmp/bench-faust")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    marks = Marks(args.expect, args.warmup, args.out)
    if args.kind == "ceiling":
        asyncio.run(ceiling(args, marks))
        return
    from faust.worker import Worker

    app = bare(args, marks) if args.kind == "bare" else naive(args, marks)
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
