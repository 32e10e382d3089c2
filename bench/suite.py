"""The benchmark suite: every section on one embedded broker and Redis, one table, one JSON file.

    python -m bench.suite [--quick | --tiny] [--only 1,1k,3,...] [--rounds N] [--profile] [--apache-kafka HOST:PORT]
    make bench          # the full run (12-13 min before issue 18 added peers and sections; see docs/performance.md)
    make bench-quick    # reduced sizes, a few minutes: for every change to a hot path

Sections (see docs/performance.md for what each measures and the figures of the last runs):
1 stream (ceiling, bare Faust, naive Faust Table peer, quixstreams count and 30-day sliding window
  peers, our scorer with 1 and 2 processes, and with 1 on a Redis Cluster),
1k section 1's Faust peers and scorer on Apache Kafka itself (one KRaft node; skipped, saying why,
   without Java 17 or the jars deploy/fetch-kafka.sh fetches),
2 core and edge (the pure core and the Processor without I/O on the same events),
3 ingest (POST /v1/events batches of 1 and 100 vs raw produce, open-loop latency, `fatigue import`),
4 decision API (max rate and open-loop latency, with the load generator's own ceiling),
5 end to end (event -> snapshot and -> webhook, idle and under 1,000 events/s),
6 state (bytes per customer, scorer RSS, restart after kill -9 with 100k customers),
7 Redis commands and round trips per event or request (taken in sections 1, 3 and 4).

Each figure is the median of interleaved runs with the 1-minute load average at the start of
each run beside it, and its ratio to the ceiling or peer it is compared with. The table goes to
stdout, the JSON (with the machine and the parameters) to bench/results/<mode>-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import Context, Figure, Report

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "rounds": 3, "warmup": 0.1,
        "stream_events": 60_000, "stream_customers": 6_000,
        "edge_events": 30_000,
        "http_seconds": 5.0, "http_rates": [500, 1000, 2000, 3000], "decision_rates": [1000, 2000, 4000],
        "decision_customers": 10_000, "import_events": 100_000,
        "e2e_rounds": 25, "e2e_background": 1000,
        "state_customers": 100_000, "state_events_per_customer": 1, "restart_events": 2_000,
        # Section 1k: half of section 1's events (10 per customer as there), 2 rounds: section 1 itself
        # takes about half of the suite's 12-14 minutes, and all of it must stay under 20.
        "apache_kafka_stream_events": 30_000, "apache_kafka_stream_customers": 3_000, "apache_kafka_rounds": 2,
    },
    "quick": {
        "rounds": 2, "warmup": 0.1,
        "stream_events": 20_000, "stream_customers": 2_000,
        "edge_events": 6_000,
        "http_seconds": 2.5, "http_rates": [500, 2000], "decision_rates": [2000],
        "decision_customers": 2_000, "import_events": 20_000,
        "e2e_rounds": 10, "e2e_background": 1000,
        "state_customers": 10_000, "state_events_per_customer": 1, "restart_events": 500,
        "apache_kafka_stream_events": 20_000, "apache_kafka_stream_customers": 2_000, "apache_kafka_rounds": 2,
    },
    "tiny": {  # the smoke test (tests/bench): every code path, no meaningful figure
        "rounds": 1, "warmup": 0.1,
        "stream_events": 600, "stream_customers": 60,
        "edge_events": 300,
        "http_seconds": 0.4, "http_rates": [100], "decision_rates": [100],
        "decision_customers": 50, "import_events": 300,
        "e2e_rounds": 2, "e2e_background": 100,
        "state_customers": 200, "state_events_per_customer": 1, "restart_events": 50,
        "apache_kafka_stream_events": 600, "apache_kafka_stream_customers": 60, "apache_kafka_rounds": 1,
    },
}


SECTIONS = {"1": "bench.stream", "1k": "bench.stream_kafka", "2": "bench.edge", "3": "bench.ingest_api",
            "4": "bench.decision_api", "5": "bench.end_to_end", "6": "bench.state"}


def section(key: str) -> Callable[[Context], Awaitable[list[Figure]]]:
    run: Callable[[Context], Awaitable[list[Figure]]] = importlib.import_module(SECTIONS[key]).run
    return run


async def run_suite(ctx: Context, only: list[str], report: Report) -> None:
    for key in only:
        began = time.monotonic()
        ctx.say(f"section {key} ...")
        report.add(await section(key)(ctx))
        ctx.say(f"section {key} done in {time.monotonic() - began:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced sizes (a few minutes)")
    mode.add_argument("--tiny", action="store_true", help="smoke-test sizes (figures are meaningless)")
    parser.add_argument("--only", default="1,1k,2,3,4,5,6", help="comma-separated sections (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per section")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy profiles of the scorer catching up (section 1) and of the API under load (3, 4)")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--apache-kafka", default=None, help="section 1k on this Apache Kafka instead of starting one")
    parser.add_argument("--results", type=Path, default=None, help="directory for the JSON (default bench/results)")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = dict(SIZES[name])
    if args.rounds:
        sizes["rounds"] = args.rounds
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    report = Report(name, {"sizes": sizes, "sections": only})
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = None
    try:
        if args.bootstrap and args.redis_url:
            bootstrap, redis_url, broker_pid, redis_pid = args.bootstrap, args.redis_url, None, None
        else:
            from fatigue.embedded import start_stack

            stack = start_stack(workdir / "stack")
            bootstrap, redis_url = stack.kafka_bootstrap_servers, stack.redis_url
            broker_pid = next(p.proc.pid for p in stack.processes if p.name == "kafka")
            redis_pid = next(p.proc.pid for p in stack.processes if p.name == "redis")
        ctx = Context(bootstrap, redis_url, workdir, sizes["rounds"], sizes, broker_pid, redis_pid,
                      say=_say, profile=args.profile, apache_kafka=args.apache_kafka)
        _say(f"benchmark suite ({name}), sections {', '.join(only)}, {sizes['rounds']} interleaved rounds; "
             f"work directory {workdir}")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_suite(ctx, only, report))
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    path = report.write(args.results) if args.results else report.write()
    print()
    print(report.table())
    print(f"\nmachine: {report.to_json()['machine']}; load average at start {report.load_start[0]:.2f}, "
          f"at end {report.to_json()['load_average_at_end'][0]:.2f}; {time.time() - report.started:.0f} s")
    print(f"results: {path}")
    return 0


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
