"""Section 3: getting events in — POST /v1/events against raw produce, and `fatigue import`.

One `fatigue api` process; the load generator (bench/loadgen.py) posts new events (unique ids,
so every one is validated, claimed, published with acks=all and confirmed). Contenders per round:

- raw produce: the same envelopes (pre-encoded) written by an aiokafka producer configured as the
  API's (`services.kafka.make_producer`: acks=all), 8 batches of 100 in flight: the ceiling;
- POST /v1/events with batches of 100, closed loop on 8 connections (events/s);
- POST /v1/events with one event per request, closed loop on 32 connections (requests/s);
- one event per request, open loop at each of `http_rates` requests/s (p50 / p99);
- `fatigue import` of a JSONL history (bench/import_throughput.py), batches of 1,000.

Beside each: the API's CPU µs per request and its Redis commands and round trips per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import profiling
from bench.apis import API_KEY, ApiProcess, api_env, measure, refused
from bench.dataset import Dataset, create_topics, delete_prefix
from bench.harness import RESULTS_DIR, Contender, Context, Figure, Sample, interleave, relate, single
from bench.import_throughput import run_import, write_history
from services.kafka import make_producer
from services.names import EVENTS_TOPIC, topic

SECTION = "3 ingest"
IN_FLIGHT_BATCHES = 8
BATCH = 100


async def raw_produce(ctx: Context, topic_prefix: str, data: Dataset, seconds: float) -> Sample:
    settings = await create_topics(ctx.bootstrap, topic_prefix, 6)
    producer = make_producer(settings, "bench-raw")
    await producer.start()
    target = topic(topic_prefix, EVENTS_TOPIC)
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        started = loop.time()

        async def batches(worker: int) -> None:
            nonlocal sent
            at = worker * BATCH
            while loop.time() < deadline:
                chunk = [data.records[(at + i) % len(data)] for i in range(BATCH)]
                at += IN_FLIGHT_BATCHES * BATCH
                futures = [await producer.send(target, value=value, key=key) for _, key, value in chunk]
                await asyncio.gather(*futures)
                sent += BATCH

        await asyncio.gather(*(batches(w) for w in range(IN_FLIGHT_BATCHES)))
        elapsed = loop.time() - started
    finally:
        await producer.stop()
    return Sample(sent / elapsed)


def _spec(ctx: Context, batch: int, round_id: str) -> dict[str, Any]:
    return {"kind": "events", "key": API_KEY, "batch": batch, "id_prefix": f"b{batch}-{round_id}",
            "customers": 20_000, "customer_prefix": f"in{ctx.run_id}-"}


def _sample(result: dict[str, Any], value: float, expected: int = 202) -> Sample:
    failed = refused(result, expected)
    if failed and not result["statuses"].get(str(expected)):
        raise RuntimeError(f"POST /v1/events failed: {failed}")
    other = sum(v for k, v in result["statuses"].items() if k != str(expected)) + result["errors"]
    return Sample(value, {
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "cpu_us_per_request": result["cpu_us_per_request"],
        "redis_commands_per_request": result["redis_commands_per_request"],
        "redis_round_trips_per_request": result["redis_round_trips_per_request"],
        **({"not_202": float(other)} if other else {}),
    })


class IngestBench:
    def __init__(self, ctx: Context, api: ApiProcess, topic_prefix: str, redis_prefix: str) -> None:
        self.ctx = ctx
        self.api = api
        self.topic_prefix = topic_prefix
        self.redis_prefix = redis_prefix
        self.seconds = ctx.size("http_seconds")
        self.n = 0
        self.data = Dataset.make(20_000, 2_000, 6, seed=5)
        self.history = ctx.workdir / "import-history.jsonl"

    def _round(self) -> str:
        self.n += 1
        return f"{self.ctx.run_id}-{self.n}"

    async def raw(self) -> Sample:
        return await raw_produce(self.ctx, self.topic_prefix, self.data, self.seconds)

    async def batch100(self) -> Sample:
        result = await measure(self.api, _spec(self.ctx, BATCH, self._round()), ctx=self.ctx, unit_per_request=BATCH,
                               duration_s=self.seconds, concurrency=IN_FLIGHT_BATCHES)
        sample = _sample(result, result["units_per_s"])
        sample.also["cpu_us_per_event"] = result["cpu_us_per_request"] / BATCH
        return sample

    async def single_max(self) -> Sample:
        result = await measure(self.api, _spec(self.ctx, 1, self._round()), ctx=self.ctx,
                               duration_s=self.seconds, concurrency=32)
        return _sample(result, result["rate"])

    def single_at(self, rate: int) -> Callable[[], Awaitable[Sample]]:
        async def open_loop() -> Sample:
            result = await measure(self.api, _spec(self.ctx, 1, self._round()), ctx=self.ctx, mode="open", rate=rate,
                                   duration_s=self.seconds, concurrency=64)
            sample = _sample(result, result["p99_ms"])
            sample.also["achieved_per_s"] = result["rate"]
            return sample
        return open_loop

    async def fatigue_import(self) -> Sample:
        events = self.ctx.size("import_events")
        if not self.history.exists():
            write_history(self.history, events, max(1, events // 20), id_prefix="imp")
        prefix = f"{self.redis_prefix}import{self._round()}:"
        env = api_env(self.ctx, self.topic_prefix, prefix, 0)
        workdir = self.ctx.workdir / f"import-{self.n}"
        workdir.mkdir(parents=True, exist_ok=True)
        elapsed, peak_mib = await asyncio.to_thread(run_import, self.history, workdir, env, 1000, False)
        await delete_prefix(self.api.redis, prefix)
        return Sample(events / elapsed, {"peak_rss_mib": peak_mib})


async def run(ctx: Context) -> list[Figure]:
    topic_prefix, redis_prefix = f"bench{ctx.run_id}i.", f"bench:{ctx.run_id}:ingest:"
    await create_topics(ctx.bootstrap, topic_prefix, 6)
    api = await ApiProcess.start(ctx, "api-ingest", topic_prefix, redis_prefix)
    bench = IngestBench(ctx, api, topic_prefix, redis_prefix)
    ctx.say(f"  section 3: {bench.seconds:g} s per HTTP run; import of {ctx.size('import_events'):,} events")
    try:
        await measure(api, _spec(ctx, 1, "warmup"), ctx=ctx, duration_s=min(1.0, bench.seconds), concurrency=8)
        contenders = [
            Contender(SECTION, f"raw produce, batches of {BATCH} ({IN_FLIGHT_BATCHES} in flight, acks=all)",
                      "events/s", bench.raw, short="raw produce"),
            Contender(SECTION, f"POST /v1/events, batches of {BATCH} ({IN_FLIGHT_BATCHES} connections)",
                      "events/s", bench.batch100, target=">= 50% of raw produce"),
            Contender(SECTION, "POST /v1/events, 1 event per request, max (32 connections)", "requests/s",
                      bench.single_max, target=">= 3,000"),
            *[Contender(SECTION, f"POST 1 event at {rate:,}/s open loop: p99", "ms", bench.single_at(rate))
              for rate in ctx.size("http_rates")],
            Contender(SECTION, "fatigue import, batches of 1,000", "events/s", bench.fatigue_import),
        ]
        figures = await interleave(contenders, ctx.rounds, say=ctx.say)
        relate(figures[1], figures[0])
        if ctx.profile:
            await profile(ctx, bench)
        return figures + _redis_figures(figures[1], figures[2])
    finally:
        await delete_prefix(api.redis, redis_prefix)
        await api.stop()


def _redis_figures(batch: Figure, single_event: Figure) -> list[Figure]:
    out = []
    for figure, what, per in ((single_event, "POST /v1/events (1 event)", 1), (batch, "POST /v1/events (100 events)",
                                                                                BATCH)):
        commands = figure.also.get("redis_commands_per_request", float("nan")) / per
        trips = figure.also.get("redis_round_trips_per_request", float("nan")) / per
        out.append(single("7 redis", f"{what}: Redis commands per event", "commands",
                          [Sample(commands, {"round_trips": trips})]))
    return out


async def profile(ctx: Context, bench: IngestBench) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for batch, concurrency in ((1, 32), (BATCH, IN_FLIGHT_BATCHES)):
        raw = RESULTS_DIR / "profiles" / f"events-{batch}-{stamp}.collapsed"
        task = asyncio.create_task(measure(bench.api, _spec(ctx, batch, f"profile{batch}"), ctx=ctx,
                                           duration_s=bench.seconds + 2, concurrency=concurrency))
        await asyncio.sleep(1)
        ok = await profiling.record(bench.api.child.pid, bench.seconds, raw)
        await task
        if ok:
            summary = profiling.summarize(raw)
            raw.with_suffix(".txt").write_text(summary + "\n")
            ctx.say(f"  profile of POST /v1/events (batches of {batch}) at max rate:\n{summary}")
