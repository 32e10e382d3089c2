"""Section 1k: section 1's contenders (ceiling, bare Faust, naive Faust Table peer, our scorer with 1
and 2 processes) on Apache Kafka itself instead of the embedded Tansu.

One KRaft node of the release pinned in deploy/kafka/pom.xml, started here with the heap and JVM
options Apache Kafka's own scripts give a broker (1 GiB, G1: fatigue/kafka_cluster.py
SCRIPT_JVM_OPTS), on the jars deploy/fetch-kafka.sh fetched; `--apache-kafka HOST:PORT` uses a running
one instead. Without Java 17 or the jars the section is skipped with one line saying why. The
scorer runs as in production on Apache Kafka (idempotent producer on, the default 500 ms fetch
wait) with the same short group timeouts as on Tansu, so joins cost the same on both.
"""

from __future__ import annotations

import asyncio
import dataclasses

from bench.harness import Context, Figure
from bench.stream import run_contenders
from fatigue.kafka_cluster import SCRIPT_JVM_OPTS, kafka_version, start_cluster, unavailable_reason

APACHE_KAFKA_ENV = {
    "FATIGUE_KAFKA_IDEMPOTENCE": "true",
    "FATIGUE_BROKER_SESSION_TIMEOUT_S": "6",
    "FATIGUE_BROKER_HEARTBEAT_INTERVAL_S": "1",
    "FATIGUE_BROKER_REBALANCE_TIMEOUT_S": "5",
    "FATIGUE_LOG_LEVEL": "WARNING",
}


def _own_sizes(ctx: Context) -> Context:
    """Section 1's contenders at this section's sizes (bench/suite.py SIZES: fewer events and rounds in
    `make bench`, to stay under 20 minutes), with work folders and group names of its own."""
    sizes = {**ctx.sizes, "stream_events": ctx.size("apache_kafka_stream_events"),
             "stream_customers": ctx.size("apache_kafka_stream_customers")}
    return dataclasses.replace(ctx, sizes=sizes, run_id=f"{ctx.run_id}k",
                               rounds=min(ctx.rounds, ctx.size("apache_kafka_rounds")))


def section_name() -> str:
    return f"1k stream, Apache Kafka {kafka_version()}"


async def run(ctx: Context) -> list[Figure]:
    ctx = _own_sizes(ctx)
    if ctx.apache_kafka:
        _, figures = await run_contenders(dataclasses.replace(ctx, bootstrap=ctx.apache_kafka, broker_pid=None),
                                          section_name(), APACHE_KAFKA_ENV, full=False)
        return figures
    reason = unavailable_reason()
    if reason:
        ctx.say(f"  section 1k skipped: {reason}")
        return []
    cluster = await asyncio.to_thread(start_cluster, ctx.workdir / "apache-kafka", 1, heap="1g",
                                      jvm_opts=SCRIPT_JVM_OPTS)
    ctx.say(f"    Apache Kafka {kafka_version()} (one KRaft node) started in {cluster.started_s:.1f} s")
    try:
        [pid] = cluster.pids().values()
        _, figures = await run_contenders(
            dataclasses.replace(ctx, bootstrap=cluster.bootstrap_servers, broker_pid=pid), section_name(),
            APACHE_KAFKA_ENV, full=False)
    finally:
        await asyncio.to_thread(cluster.stop)
    return figures
