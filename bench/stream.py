"""Section 1 (and the scorer's part of 6 and 7): reading the same pre-produced events, side by side.

Contenders, interleaved round by round on one broker and one topic (`Dataset`, 6 partitions):
the ceiling (raw aiokafka `getmany` + JSON decode), a bare Faust agent, the naive Faust Table
agent (bench/stream_peers.py), two quixstreams peers — the plain State-API count per customer and a
30-day sliding-window count per customer, both with RocksDB state and a changelog topic
(bench/quix_peers.py, run from their own virtualenv, `.venv-quix`) — and our scorer (`fatigue
scorer`, default policy) with one and with two worker processes in one consumer group on the suite's
Redis, and with one worker on a Redis Cluster (3 primaries, 3 replicas on loopback,
fatigue/redis_cluster.py, started for this section; left out, saying why, where redis-server cannot
run one). Each run starts from offset 0 with a fresh group (and, for the scorer, a fresh Redis
prefix), and is timed from `warmup` of the events to the last (so start-up, the group join and the
first rebalance are left out): events/s, CPU µs per event of the contender's own processes (from
/proc, every thread), and beside them what Redis and the broker spent per event.

The scorer's progress is read from its committed offsets in Redis (an HGET per partition every 20 ms). Its
mean batch size is its own histogram `fatigue_scorer_batch_records` (sum / count over the run, all
of it catching up: the events were produced before it started), read from each worker's /metrics.
Section 7's Redis commands per event are INFO commandstats deltas over the run (the bench's own
polls subtracted), its round trips the requests the scorer's clients wrote (bench/procs.py).
Section 6's bytes per customer with 30 days of history are sampled from what the first scorer
run wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench.dataset import Dataset, command_stats, create_topics, delete_prefix, produce, redis_cpu_s, stats_delta
from bench.harness import Contender, Context, Figure, Sample, interleave, median, percentile, relate, single
from bench.procs import EMBEDDED_ENV, REPO_ROOT, Child, cpu_seconds, service, spawn, stop_all
from fatigue.embedded import free_port
from fatigue.redis_cluster import RedisClusterProcesses, start_cluster, unsupported
from services.names import EVENTS_TOPIC, RedisKeys, topic
from services.partitions import partition_of
from services.redisio import RedisClient, make_redis_for

SECTION = "1 stream"
POLL_S = 0.02
QUIX_KINDS = ("quix-count", "quix-window")
Watcher = Callable[[list[Child], "OffsetProgress"], Coroutine[Any, Any, None]]
"""Something to run while a scorer run is timed, given its processes and its progress."""
QUIX_PYTHON_ENV = "QUIX_PYTHON"
"""The interpreter of the quixstreams peers (default: .venv-quix/bin/python, made by bootstrap.sh --dev)."""


def quix_python() -> str:
    """The quixstreams peers' interpreter; RuntimeError saying how to make it when it is missing."""
    python = os.environ.get(QUIX_PYTHON_ENV) or str(REPO_ROOT / ".venv-quix" / "bin" / "python")
    if not Path(python).exists():
        raise RuntimeError(f"no quixstreams environment at {python}: run `bash deploy/bootstrap.sh --dev` "
                           f"(or set {QUIX_PYTHON_ENV} to a Python with quixstreams, bench/quix-constraints.txt)")
    return python


def scorer_env(ctx: Context, topic_prefix: str, redis_prefix: str, app_id: str, partitions: int,
               workdir: Path, redis_url: str | None = None,
               service_env: dict[str, str] = EMBEDDED_ENV) -> dict[str, str]:
    """The scorer's environment; `redis_url`: another Redis than the suite's (a Cluster); `service_env`:
    what the broker needs (EMBEDDED_ENV: what `fatigue up` sets for Tansu; bench/stream_kafka.py: Apache
    Kafka's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FATIGUE_")}
    env.update(service_env)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "REDIS_URL": redis_url or ctx.redis_url,
        "FATIGUE_TOPIC_PREFIX": topic_prefix,
        "FATIGUE_REDIS_PREFIX": redis_prefix, "FATIGUE_SCORER_APP_ID": app_id, "FATIGUE_PARTITIONS": str(partitions),
        "FATIGUE_WEB_PORT": "0", "FATIGUE_DATA_DIR": str(workdir / "data"),
    })
    return env


class OffsetProgress:
    """How many events of the events topic a scorer has committed to Redis (the offsets stored with
    each partition's state)."""

    def __init__(self, redis: RedisClient, redis_prefix: str, group: str, events_topic: str, partitions: int = 6,
                 *, cluster: bool = False) -> None:
        self._redis = redis
        self._keys = [RedisKeys(redis_prefix, cluster=cluster).partition(p).offsets() for p in range(partitions)]
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
        self.cluster_redis: RedisClient | None = None
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
        common = ["--bootstrap", self.ctx.bootstrap, "--topic", self.events_topic, "--group", name, "--expect",
                  str(len(self.data)), "--warmup", str(self.warmup), "--out", str(out)]
        if kind in QUIX_KINDS:
            args = [quix_python(), "-m", "bench.quix_peers", kind.removeprefix("quix-"), *common,
                    "--datadir", str(workdir / "quix")]
        else:
            args = [sys.executable, "-m", "bench.stream_peers", kind, *common,
                    "--partitions", str(self.data.partitions), "--datadir", str(workdir / "faust")]
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

    async def scorer(self, workers: int, cluster: RedisClusterProcesses | None = None, *,
                     while_timed: Watcher | None = None) -> Sample:
        """`workers` scorer processes on the suite's Redis, or on `cluster`, until every event is committed;
        `while_timed` runs beside the timed part (bench/stream_profile.py: a profiler)."""
        name, workdir = self._next(f"scorer{workers}{'-cluster' if cluster else ''}")
        redis_prefix = f"bench:{name}:"
        redis = self.redis if cluster is None else self._cluster_client(cluster)
        env = scorer_env(self.ctx, self.topic_prefix, redis_prefix, name, self.data.partitions, workdir,
                         redis_url=cluster.url if cluster else None, service_env=self.service_env)
        progress = OffsetProgress(redis, redis_prefix, name, self.events_topic, self.data.partitions,
                                  cluster=cluster is not None)
        before = await command_stats(self.redis) if cluster is None else {}
        ports = [free_port() for _ in range(workers)]
        children = [service(f"scorer-{n}", "scorer", {**env, "FATIGUE_WEB_PORT": str(port)}, workdir / f"w{n}")
                    for n, port in enumerate(ports)]
        try:
            run = await self._timed(children, progress, name, self._redis_cpu(cluster), while_timed)
            run.batch_records = await batch_records_mean(ports)
        finally:
            stop_all(children)
        sample = run.sample()
        if cluster is None:
            await self._single_redis_costs(sample, run, workers, before, progress.polls, redis_prefix)
        return sample

    async def _timed(self, children: list[Child], progress: OffsetProgress, name: str,
                     redis_cpu: Callable[[], Awaitable[float]], while_timed: Watcher | None = None) -> Timed:
        """Wait for `warmup` of the events, then time the rest (CPU of the scorer, Redis and the broker)."""
        total = len(self.data)
        limit = total / 200 + 120
        spawned = Marked(time.monotonic(), 0, 0.0, await redis_cpu(), self._broker_cpu())
        await wait_progress(progress, max(1, int(total * self.warmup)), limit, children, name)
        t0, n0 = time.monotonic(), await progress.processed()
        start = Marked(t0, n0, self._cpu(children), await redis_cpu(), self._broker_cpu())
        if n0 >= total:
            # Tiny inputs: every event was committed by the warm-up point (one batch per
            # partition), so nothing is left to time after it; time the whole run instead,
            # start-up included (a smaller rate than the real one, never a division by zero).
            start = spawned
        watching = asyncio.create_task(while_timed(children, progress)) if while_timed else None
        t1, n1 = await wait_progress(progress, total, limit, children, name)
        end = Marked(t1, n1, self._cpu(children), await redis_cpu(), self._broker_cpu())
        if watching is not None:
            await watching
        await asyncio.sleep(0.3)  # the round-trip files are rewritten every 0.2 s
        return Timed(start, end, sum(c.round_trips() for c in children))

    async def _single_redis_costs(self, sample: Sample, run: Timed, workers: int, before: dict[str, int],
                                  polls: int, redis_prefix: str) -> None:
        """Section 7's commands and round trips per event (and section 6's sizes after the first run)."""
        total = len(self.data)
        # The bench's own: an HGET per partition per progress poll; INFO commandstats before the run and
        # INFO cpu at the start and both marks.
        own = {"hget": polls * self.data.partitions, "info": 4}
        commands = stats_delta(await command_stats(self.redis), before, own)
        self.redis_costs.append({"workers": workers, "commands": sum(commands.values()) / total,
                                 "round_trips": run.trips / total, **{k: v / total for k, v in commands.items()}})
        sample.also["redis_commands_per_event"] = sum(commands.values()) / total
        sample.also["redis_round_trips_per_event"] = run.trips / total
        if workers == 1 and self.sizes is None:
            self.sizes = await sample_sizes(self.redis, RedisKeys(redis_prefix), self.data.customers,
                                            partitions=self.data.partitions)
        await delete_prefix(self.redis, redis_prefix)

    def _redis_cpu(self, cluster: RedisClusterProcesses | None) -> Callable[[], Awaitable[float]]:
        """Redis's CPU seconds so far: INFO of the suite's Redis, or /proc of every Cluster node (replicas too)."""
        if cluster is None:
            return lambda: redis_cpu_s(self.redis)

        async def of_cluster() -> float:
            return sum(cpu_seconds(node.proc.pid) for node in cluster.nodes)
        return of_cluster

    def _cluster_client(self, cluster: RedisClusterProcesses) -> RedisClient:
        if self.cluster_redis is None:
            self.cluster_redis = make_redis_for(cluster.url)
        return self.cluster_redis

    def _cpu(self, children: list[Child]) -> float:
        return sum(c.cpu_s() for c in children)

    def _broker_cpu(self) -> float:
        return cpu_seconds(self.ctx.broker_pid) if self.ctx.broker_pid else 0.0

    async def close(self) -> None:
        await self.redis.aclose()
        if self.cluster_redis is not None:
            await self.cluster_redis.aclose()


@dataclass
class Marked:
    """One moment of a scorer run: time, events committed, CPU seconds of the scorer, Redis, the broker."""

    t: float
    n: int
    cpu: float
    redis_cpu: float
    broker_cpu: float


@dataclass
class Timed:
    """A scorer run between its two marks, the Redis round trips of its clients, its mean batch."""

    start: Marked
    end: Marked
    trips: int
    batch_records: float = float("nan")

    def sample(self) -> Sample:
        events = self.end.n - self.start.n
        return Sample(events / (self.end.t - self.start.t), {
            "cpu_us_per_event": (self.end.cpu - self.start.cpu) / events * 1e6,
            "redis_cpu_us_per_event": (self.end.redis_cpu - self.start.redis_cpu) / events * 1e6,
            "broker_cpu_us_per_event": (self.end.broker_cpu - self.start.broker_cpu) / events * 1e6,
            "batch_records_mean": self.batch_records,
        })


async def batch_records_mean(ports: list[int]) -> float:
    """Mean records per partition batch of the scorers serving /metrics on `ports` (their own histogram
    `fatigue_scorer_batch_records`, sum / count over everything they processed)."""
    total = count = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for port in ports:
            answer = await client.get(f"http://127.0.0.1:{port}/metrics")
            answer.raise_for_status()
            for family in text_string_to_metric_families(answer.text):
                if family.name != "fatigue_scorer_batch_records":
                    continue
                for metric in family.samples:
                    if metric.name.endswith("_sum"):
                        total += metric.value
                    elif metric.name.endswith("_count"):
                        count += metric.value
    return total / count if count else float("nan")


def _plain_env() -> dict[str, str]:
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
    quix_python()  # before anything runs: say at once how to make the peers' environment
    bench, figures = await run_contenders(ctx, SECTION, EMBEDDED_ENV, full=True)
    customers, events = ctx.size("stream_customers"), ctx.size("stream_events")
    return figures + _redis_figures(bench) + _size_figures(bench, customers, events)


async def run_contenders(ctx: Context, section: str, service_env: dict[str, str], *,
                         full: bool) -> tuple[StreamBench, list[Figure]]:
    """The contenders on `ctx.bootstrap`, interleaved; figures under `section`. `full`: the quixstreams
    peers and the scorer on a Redis Cluster too (section 1; section 1k runs the Faust peers and the
    scorer on one Redis)."""
    events, customers, partitions = ctx.size("stream_events"), ctx.size("stream_customers"), 6
    say = ctx.say
    say(f"  {section}: {events:,} events of {customers:,} customers over 30 days, {partitions} partitions")
    data = Dataset.make(events, customers, partitions, seed=11)
    topic_prefix = f"bench{ctx.run_id}s."
    await create_topics(ctx.bootstrap, topic_prefix, partitions)
    started = time.monotonic()
    await produce(ctx.bootstrap, topic(topic_prefix, EVENTS_TOPIC), data.records)
    say(f"    produced {len(data):,} events in {time.monotonic() - started:.1f} s")
    cluster = await _start_cluster(ctx) if full else None
    bench = StreamBench(ctx, data, topic_prefix, warmup=ctx.size("warmup"), service_env=service_env)
    try:
        figures = await _contend(ctx, bench, section, cluster, quix=full)
    finally:
        await bench.close()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
    return bench, figures


async def _start_cluster(ctx: Context) -> RedisClusterProcesses | None:
    """The section's Redis Cluster (3 primaries, 3 replicas), or None (said why) where none can run."""
    why = unsupported()
    if why:
        ctx.say(f"    no Redis Cluster run: {why}")
        return None
    cluster = await asyncio.to_thread(start_cluster, ctx.workdir / f"cluster-{ctx.run_id}")
    ctx.say(f"    Redis Cluster of 3 primaries and 3 replicas started in {cluster.started_in_s:.1f} s")
    return cluster


SCORER_TARGET = ">= 4x naive peer and >= 2x quixstreams window"


async def _contend(ctx: Context, bench: StreamBench, section: str, cluster: RedisClusterProcesses | None, *,
                   quix: bool) -> list[Figure]:
    def c(name: str, short: str, run: Callable[[], Awaitable[Sample]], **kw: str) -> Contender:
        return Contender(section, name, "events/s", run, short=short, **kw)

    contenders = [
        c("ceiling: raw aiokafka getmany + JSON decode", "ceiling", lambda: bench.peer("ceiling")),
        c("bare Faust agent, no work", "bare Faust", lambda: bench.peer("bare")),
        c("naive Faust agent, count per customer in a Table", "naive peer", lambda: bench.peer("naive")),
    ]
    if quix:
        contenders += [
            c("quixstreams: State-API count per customer (RocksDB, changelog)", "quixstreams count",
              lambda: bench.peer("quix-count")),
            c("quixstreams: 30-day sliding-window count per customer (RocksDB, changelog)", "quixstreams window",
              lambda: bench.peer("quix-window")),
        ]
    contenders += [
        c("our scorer, 1 worker process", "1 process", lambda: bench.scorer(1),
          target=SCORER_TARGET if quix else ">= 4x naive peer"),
        c("our scorer, 2 worker processes", "2 processes", lambda: bench.scorer(2), target=">= 1.7x one process"),
    ]
    if cluster is not None:
        contenders.append(c("our scorer, 1 worker process, on a Redis Cluster (3 primaries, 3 replicas)",
                            "1 process on a Cluster", lambda: bench.scorer(1, cluster)))
    figures = await interleave(contenders, ctx.rounds, say=ctx.say)
    _relate_stream(figures)
    if ctx.profile and quix:
        from bench.stream_profile import profile_scorer

        await profile_scorer(ctx, bench)
    return figures


def _relate_stream(figures: list[Figure]) -> None:
    """Each peer against the ceiling; the scorer against the peers the targets name (its note), two
    processes against one, the Cluster run against one process on one Redis."""
    by = {f.short: f for f in figures}
    one = by["1 process"]
    peers = [p for p in ("bare Faust", "naive peer", "quixstreams count", "quixstreams window") if p in by]
    for peer in peers:
        relate(by[peer], by["ceiling"])
    relate(one, by["naive peer"])
    ratios = []
    for peer in sorted(peers, key=("naive peer", "quixstreams window", "quixstreams count", "bare Faust").index):
        base = by[peer].value
        if base and base == base and one.value == one.value:
            ratios.append(f"{one.value / base:.2f}x {peer}")
    one.note = ", ".join(ratios)
    relate(by["2 processes"], one)
    if "1 process on a Cluster" in by:
        relate(by["1 process on a Cluster"], one)


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
