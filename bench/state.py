"""Section 6: what `state_customers` customers cost the scorer, and its restart after kill -9.

One scorer process (`fatigue scorer`, default policy) reads `state_customers` x
`state_events_per_customer` events (every customer gets its share, over 30 days) from a fresh
topic. Then:

- bytes per customer as stored (state + decision view values, HSTRLEN; Redis's MEMORY USAGE of
  the partitions' hashes) over a sample, and Redis's `used_memory` growth divided by the customers;
- the scorer's resident memory (VmRSS now, VmHWM peak) once caught up;
- restart: the scorer is killed with SIGKILL, `restart_events` more events for existing customers
  are produced, a new scorer process is started (same group, same Redis): the time from its start
  until its committed offsets in Redis reach the end of the topic (everything processed).

One run (it is the heaviest section); the scorer's rate on this data is reported beside.
Section 1 reports the same bytes for customers with ten events in 30 days.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from bench.dataset import Dataset, create_topics, delete_prefix, produce
from bench.harness import Context, Figure, Sample, single
from bench.procs import service, stop_all
from bench.stream import OffsetProgress, sample_sizes, scorer_env, wait_progress
from services.names import EVENTS_TOPIC, RedisKeys, topic
from services.settings import ScorerSettings

SECTION = "6 state"
LAST_RESTART_S = 7.2
"""Restart after kill -9 to caught up (100,000 customers, 2,000 new events) in the last run before issue 18
(docs/performance.md, phase 3 run B, bench/results/full-20261201T171648Z.json)."""


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def run(ctx: Context) -> list[Figure]:
    customers, per = ctx.size("state_customers"), ctx.size("state_events_per_customer")
    extra = ctx.size("restart_events")
    data = Dataset.make(customers * per, customers, 6, seed=21, every_customer=True)
    more = Dataset.make(extra, customers, 6, seed=22, id_prefix="late", every_customer=True, days=0.01)
    topic_prefix, name = f"bench{ctx.run_id}st.", f"state-{ctx.run_id}"
    redis_prefix = f"bench:{name}:"
    events_topic = topic(topic_prefix, EVENTS_TOPIC)
    await create_topics(ctx.bootstrap, topic_prefix, 6)
    await produce(ctx.bootstrap, events_topic, data.records)
    ctx.say(f"  section 6: {customers:,} customers, {len(data):,} events; then kill -9 and {extra:,} more")
    redis = Redis.from_url(ctx.redis_url, decode_responses=True)
    env = scorer_env(ctx, topic_prefix, redis_prefix, name, 6, ctx.workdir / name)
    progress = OffsetProgress(redis, redis_prefix, name, events_topic, data.partitions)
    memory0 = await used_memory(redis)
    first = service("scorer-state", "scorer", env, ctx.workdir / name / "first")
    children = [first]
    try:
        load = Sample(0).load
        began = time.monotonic()
        limit = len(data) / 100 + 180
        t_first, _ = await wait_progress(progress, 1, limit, children, name)
        t_done, _ = await wait_progress(progress, len(data), limit, children, name)
        # All committed in the first poll (a tiny input): time it from the start instead.
        rate = len(data) / ((t_done - t_first) if t_done > t_first else (t_done - began))
        memory = first.memory_kib()
        stored = await sample_sizes(redis, RedisKeys(redis_prefix), customers, partitions=data.partitions)
        grown = (await used_memory(redis) - memory0) / customers
        first.kill9()
        await produce(ctx.bootstrap, events_topic, more.records)
        restarted = time.monotonic()
        second = service("scorer-restart", "scorer", env, ctx.workdir / name / "second")
        children.append(second)
        t_back, _ = await wait_progress(progress, len(data) + 1, limit, [second], f"{name} restart")
        t_caught, _ = await wait_progress(progress, len(data) + len(more), limit, [second], f"{name} restart")
        ctx.say(f"    caught up {len(data):,} events in {t_done - began:.1f} s ({rate:,.0f} events/s after the "
                f"first commit); restarted after kill -9: first commit after {t_back - restarted:.1f} s, caught up "
                f"after {t_caught - restarted:.1f} s")
    finally:
        stop_all(children)
        await delete_prefix(redis, redis_prefix)
        await redis.aclose()
    return _figures(customers, per, stored, grown, memory, rate, t_caught - restarted, t_back - restarted, extra, load)


def _figures(customers: int, per: int, stored: dict[str, float], grown: float, memory: dict[str, int], rate: float,
             caught_s: float, back_s: float, extra: int, load: float) -> list[Figure]:
    where = f"{customers:,} customers, {per} event{'s' if per > 1 else ''} each"
    return [
        single(SECTION, f"state + decision view bytes per customer ({where})", "bytes",
               [Sample(stored["bytes_median"], {"p99": stored["bytes_p99"]}, load=load)], target="<= 892 (median)",
               note=f"state {stored['state_bytes']:,.0f} + view {stored['view_bytes']:,.0f}; "
                    f"MEMORY USAGE of the hashes {stored['redis_memory_per_customer']:,.0f}; Redis used_memory grew "
                    f"{grown:,.0f} per customer"),
        single(SECTION, f"scorer RSS after {customers:,} customers", "MiB",
               [Sample(memory.get("VmRSS", 0) / 1024, {"peak_mib": memory.get("VmHWM", 0) / 1024}, load=load)],
               note=f"the worker's cache of decoded states holds {ScorerSettings().state_cache_size:,} customers "
                    "(FATIGUE_STATE_CACHE_SIZE)"),
        single(SECTION, f"scorer throughput on this data ({where})", "events/s", [Sample(rate, load=load)]),
        single(SECTION, f"restart after kill -9 to caught up ({customers:,} customers, {extra:,} new events)", "s",
               [Sample(caught_s, {"first_commit_s": back_s}, load=load)],
               target=f"<= {LAST_RESTART_S} s (the last run's)"),
    ]
