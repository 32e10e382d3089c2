"""Section 1 (and the scorer's part of 6 and 7): reading the same pre-produced events, side by side.

Contenders, interleaved round by round on one broker and one topic (`Dataset`, 6 partitions):
the ceiling (raw aiokafka `getmany` + JSON decode), a bare Faust agent, the naive Faust Table
agent (bench/stream_peers.py), and our scorer (`fatigue scorer`, default policy) with one and
with two worker processes in one consumer group. Each run starts from offset 0 with a fresh group
(and, for the scorer, a fresh Redis prefix), and is timed from `warmup` of the events to the last
(so start-up, the group join and the first rebalance are left out): events/s, CPU µs per event of
the contender's own processes, and beside them what Redis and the broker spent per event.

The scorer's progress is read from its committed offsets in Redis (one HGETALL every 20 ms).
Section 7's Redis commands per event are INFO commandstats deltas over the run (the bench's own
polls subtracted), its round trips the requests the scorer's clients wrote (bench/procs.py).
Section 6's bytes per customer with 30 days of history are sampled from what the first scorer
run wrote.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from bench.dataset import Dataset, command_stats, create_topics, delete_prefix, produce, redis_cpu_s, stats_delta
from bench.harness import Contender, Context, Figure, Sample, interleave, median, percentile, relate, single
from bench.procs import EMBEDDED_ENV, Child, cpu_seconds, service, spawn, stop_all
from services.names import EVENTS_TOPIC, RedisKeys, topic
from services.partitions import partition_of

SECTION = "1 stream"
POLL_S = 0.02


def scorer_env(ctx: Context, topic_prefix: str, redis_prefix: str, app_id: str, partitions: int,
               workdir: Path, service_env: dict[str, str] = EMBEDDED_ENV) -> dict[str, str]:
    """The scorer's environment; `service_env`: what the broker needs (EMBEDDED_ENV: what `fatigue up`
    sets for Tansu; bench/stream_kafka.py: Apache Kafka's)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FATIGUE_")}
    env.update(service_env)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "REDIS_URL": ctx.redis_url, "FATIGUE_TOPIC_PREFIX": topic_prefix,
        "FATIGUE_REDIS_PREFIX": redis_prefix, "FATIGUE_SCORER_APP_ID": app_id, "FATIGUE_PARTITIONS": str(partitions),
        "FATIGUE_WEB_PORT": "0", "FATIGUE_DATA_DIR": str(workdir / "data"),
    })
    return env


class OffsetProgress:
    """How many events of the events topic a scorer has committed to Redis (the offsets stored with
    each partition's state)."""

    def __init__(self, redis: Redis, redis_prefix: str, group: str, events_topic: str, partitions: int = 6) -> None:
        self._redis = redis
        self._keys = [RedisKeys(redis_prefix).partition(p).offsets() for p in range(partitions)]
        self._topic = events_topic
        self.polls = 0

    async def processed(self) -> int:
        self.polls += 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._keys:
                pipe.hget(key, self._topic)
            stored = await pipe.execute()
        return sum(int(v) + 1 for v in stored if v is not None)


async def wait_progress(progress: OffsetProgress, target: int, deadline_s: float, children: list[Child],
                        what: str) -> tuple[float, int]:
    """Poll until `target` events are processed; (time, processed) when reached."""
    deadline = time.monotonic() + deadline_s
    while True:
        done = await progress.processed()
        if done >= target:
            return time.monotonic(), done
        dead = [c for c in children if not c.alive()]
        if dead or time.monotonic() > deadline:
            why = f"{dead[0].name} exited {dead[0].proc.returncode}" if dead else f"not done in {deadline_s:.0f}s"
            tail = dead[0].log_tail() if dead else children[0].log_tail()
            raise RuntimeError(f"{what}: {why} ({done:,}/{target:,} processed)\n{tail}")
        await asyncio.sleep(POLL_S)


class StreamBench:
    def __init__(self, ctx: Context, data: Dataset, topic_prefix: str, warmup: float,
                 service_env: dict[str, str] = EMBEDDED_ENV) -> None:
        self.ctx = ctx
        self.service_env = service_env
        self.data = data
        self.topic_prefix = topic_prefix
        self.events_topic = topic(topic_prefix, EVENTS_TOPIC)
        self.warmup = warmup
        self.runs = 0
        self.redis = Redis.from_url(ctx.redis_url, decode_responses=True)
        self.sizes: dict[str, float] | None = None
        self.redis_costs: list[dict[str, float]] = []

    def _next(self, what: str) -> tuple[str, Path]:
        self.runs += 1
        name = f"{what}-{self.ctx.run_id}-{self.runs}"
        return name, self.ctx.workdir / name

    async def peer(self, kind: str) -> Sample:
        name, workdir = self._next(kind)
        workdir.mkdir(parents=True)
        out = workdir / "result.json"
        args = [sys.executable, "-m", "bench.stream_peers", kind, "--bootstrap", self.ctx.bootstrap, "--topic",
                self.events_topic, "--group", name, "--expect", str(len(self.data)), "--warmup", str(self.warmup),
                "--partitions", str(self.data.partitions), "--datadir", str(workdir / "faust"), "--out", str(out)]
        child = spawn(kind, args, {**_plain_env(), "PYTHONWARNINGS": "ignore"}, workdir)
        try:
            result = await self._wait_file(out, child, timeout_s=len(self.data) / 300 + 120)
        finally:
            child.kill9()
        return _peer_sample(result, self.ctx)

    async def _wait_file(self, out: Path, child: Child, timeout_s: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        while not out.exists():
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not finish (exit {child.proc.returncode})\n{child.log_tail()}")
            await asyncio.sleep(0.05)
        return dict(json.loads(out.read_text()))

    async def scorer(self, workers: int) -> Sample:
        name, workdir = self._next(f"scorer{workers}")
        redis_prefix = f"bench:{name}:"
        env = scorer_env(self.ctx, self.topic_prefix, redis_prefix, name, self.data.partitions, workdir,
                         self.service_env)
        progress = OffsetProgress(self.redis, redis_prefix, name, self.events_topic, self.data.partitions)
        before = await command_stats(self.redis)
        children = [service(f"scorer-{n}", "scorer", env, workdir / f"w{n}") for n in range(workers)]
        total = len(self.data)
        try:
            limit = total / 200 + 120
            spawned = time.monotonic(), 0, 0.0, await redis_cpu_s(self.redis), self._broker_cpu()
            await wait_progress(progress, max(1, int(total * self.warmup)), limit, children, name)
            t0, n0 = time.monotonic(), await progress.processed()
            cpu0, redis0, broker0 = self._cpu(children), await redis_cpu_s(self.redis), self._broker_cpu()
            if n0 >= total:
                # Tiny inputs: every event was committed by the warm-up point (one batch per
                # partition), so nothing is left to time after it; time the whole run instead,
                # start-up included (a smaller rate than the real one, never a division by zero).
                t0, n0, cpu0, redis0, broker0 = spawned
            t1, n1 = await wait_progress(progress, total, limit, children, name)
            cpu1, redis1, broker1 = self._cpu(children), await redis_cpu_s(self.redis), self._broker_cpu()
            await asyncio.sleep(0.3)  # the round-trip files are rewritten every 0.2 s
            trips = sum(c.round_trips() for c in children)
        finally:
            stop_all(children)
        after = await command_stats(self.redis)
        commands = stats_delta(after, before, {"hgetall": progress.polls, "info": 2})
        events = n1 - n0
        self.redis_costs.append({"workers": workers, "commands": sum(commands.values()) / total,
                                 "round_trips": trips / total, **{k: v / total for k, v in commands.items()}})
        if workers == 1 and self.sizes is None:
            self.sizes = await sample_sizes(self.redis, RedisKeys(redis_prefix), self.data.customers,
                                            partitions=self.data.partitions)
        await delete_prefix(self.redis, redis_prefix)
        return Sample(events / (t1 - t0), {
            "cpu_us_per_event": (cpu1 - cpu0) / events * 1e6,
            "redis_cpu_us_per_event": (redis1 - redis0) / events * 1e6,
            "broker_cpu_us_per_event": (broker1 - broker0) / events * 1e6,
            "redis_commands_per_event": sum(commands.values()) / total,
            "redis_round_trips_per_event": trips / total,
        })

    def _cpu(self, children: list[Child]) -> float:
        return sum(c.cpu_s() for c in children)

    def _broker_cpu(self) -> float:
        return cpu_seconds(self.ctx.broker_pid) if self.ctx.broker_pid else 0.0

    async def close(self) -> None:
        await self.redis.aclose()


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FATIGUE_")}


def _peer_sample(result: dict[str, float], ctx: Context) -> Sample:
    events = result["end_n"] - result["warm_n"]
    elapsed = result["end_t"] - result["warm_t"]
    if events <= 0 or elapsed <= 0:  # all in one fetch (tiny inputs): no rate to tell
        return Sample(float("nan"), {"cpu_us_per_event": float("nan")})
    return Sample(events / elapsed, {"cpu_us_per_event": (result["end_cpu"] - result["warm_cpu"]) / events * 1e6})


async def sample_sizes(redis: Redis, keys: RedisKeys, customers: int, sample: int = 2000,
                       partitions: int = 6) -> dict[str, float]:
    """Bytes per customer as stored: the state and decision view values (HSTRLEN, in the customer's
    partition), over up to `sample` customers; and Redis's own accounting (MEMORY USAGE) of every
    partition's state and view hashes, per customer."""
    ids = [f"c{n}" for n in range(0, customers, max(1, customers // sample))][:sample]
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pkeys = keys.partition(partition_of(cid, partitions))
            pipe.hstrlen(pkeys.states(), cid)
            pipe.hstrlen(pkeys.views(), cid)
        values = await pipe.execute()
        for p in range(partitions):
            pipe.memory_usage(keys.partition(p).states(), samples=0)
            pipe.memory_usage(keys.partition(p).views(), samples=0)
        memory = await pipe.execute()
    rows = [values[i:i + 2] for i in range(0, len(values), 2)]
    rows = [r for r in rows if r[0] and r[1]]
    stored = sorted(r[0] + r[1] for r in rows)
    return {"customers_sampled": len(rows), "state_bytes": median([r[0] for r in rows]),
            "view_bytes": median([r[1] for r in rows]), "bytes_median": median(stored),
            "bytes_p99": percentile(stored, 0.99),
            "redis_memory_per_customer": sum(m or 0 for m in memory) / max(1, customers)}


async def run(ctx: Context) -> list[Figure]:
    """Section 1 figures (plus the scorer's Redis costs for section 7 and sizes for section 6)."""
    bench, figures = await run_contenders(ctx, SECTION, EMBEDDED_ENV)
    customers, events = ctx.size("stream_customers"), ctx.size("stream_events")
    return figures + _redis_figures(bench) + _size_figures(bench, customers, events)


async def run_contenders(ctx: Context, section: str, service_env: dict[str, str]) -> tuple[StreamBench, list[Figure]]:
    """The five contenders on `ctx.bootstrap`, interleaved; figures under `section`."""
    events, customers, partitions = ctx.size("stream_events"), ctx.size("stream_customers"), 6
    say = ctx.say
    say(f"  {section}: {events:,} events of {customers:,} customers over 30 days, {partitions} partitions")
    data = Dataset.make(events, customers, partitions, seed=11)
    topic_prefix = f"bench{ctx.run_id}s."
    await create_topics(ctx.bootstrap, topic_prefix, partitions)
    started = time.monotonic()
    await produce(ctx.bootstrap, topic(topic_prefix, EVENTS_TOPIC), data.records)
    say(f"    produced {len(data):,} events in {time.monotonic() - started:.1f} s")
    bench = StreamBench(ctx, data, topic_prefix, warmup=ctx.size("warmup"), service_env=service_env)
    try:
        figures = await _contend(ctx, bench, section)
    finally:
        await bench.close()
    return bench, figures


async def _contend(ctx: Context, bench: StreamBench, section: str) -> list[Figure]:
    def c(name: str, short: str, run: Callable[[], object], **kw: str) -> Contender:
        return Contender(section, name, "events/s", run, short=short, **kw)  # type: ignore[arg-type]

    ceiling = c("ceiling: raw aiokafka getmany + JSON decode", "ceiling", lambda: bench.peer("ceiling"))
    bare = c("bare Faust agent, no work", "bare Faust", lambda: bench.peer("bare"))
    naive = c("naive Faust agent, count per customer in a Table", "naive peer", lambda: bench.peer("naive"))
    one = c("our scorer, 1 worker process", "1 process", lambda: bench.scorer(1),
            target=">= 3x naive peer and >= 70% of bare Faust")
    two = c("our scorer, 2 worker processes", "2 processes", lambda: bench.scorer(2),
            target=">= 1.7x one process")
    figures = await interleave([ceiling, bare, naive, one, two], ctx.rounds, say=ctx.say)
    f_ceiling, f_bare, f_naive, f_one, f_two = figures
    relate(f_bare, f_ceiling)
    relate(f_naive, f_ceiling)
    relate(f_one, f_naive)
    if f_bare.value:
        f_one.note = f"{f_one.value / f_bare.value:.2f}x bare Faust"
    relate(f_two, f_one)
    return figures


def _redis_figures(bench: StreamBench) -> list[Figure]:
    out = []
    for workers in (1, 2):
        costs = [c for c in bench.redis_costs if c["workers"] == workers]
        if not costs:
            continue
        commands = [Sample(c["commands"], {"round_trips": c["round_trips"]}) for c in costs]
        top = sorted((k for k in costs[0] if k not in ("workers", "commands", "round_trips")),
                     key=lambda k: -costs[0][k])[:6]
        detail = ", ".join(f"{k} {median([c.get(k, 0) for c in costs]):.2f}" for k in top)
        out.append(single("7 redis", f"scorer ({workers} worker{'s' if workers > 1 else ''}): Redis commands per event",
                          "commands", commands, note=detail))
    return out


def _size_figures(bench: StreamBench, customers: int, events: int) -> list[Figure]:
    if bench.sizes is None:
        return []
    s = bench.sizes
    note = (f"{events / customers:.0f} events per customer over 30 days; state {s['state_bytes']:,.0f} + view "
            f"{s['view_bytes']:,.0f}; Redis MEMORY USAGE of the hashes {s['redis_memory_per_customer']:,.0f} per "
            f"customer; {s['customers_sampled']:,.0f} sampled")
    return [single("6 state", "state + decision view bytes per customer (section 1 data)", "bytes",
                   [Sample(s["bytes_median"], {"p99": s["bytes_p99"]})], target="<= 892 (median)", note=note)]
