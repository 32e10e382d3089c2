"""Section 4: GET /v1/customers/{id}/decision over HTTP — maximum rate and open-loop latency.

One `fatigue api` process on the suite's Redis, with snapshots written by the real core for
`decision_customers` customers (bench/decision.py: a few weeks of touches and responses each);
requests cycle through the customers and four channels, `kind=promo`. Contenders per round:

- the load generator's own ceiling: the same generator (bench/loadgen.py, closed loop, 32
  connections) against a stub server answering at once;
- the framework's floor: a minimal FastAPI app with the decision's path and parameters and no I/O,
  served like ours (bench/api_floor.py): what FastAPI + uvicorn cost here before any of our work;
- the decision API at its maximum (closed loop, 32 connections);
- the decision API open loop at each of `decision_rates` requests/s (p50 / p99 from when each
  request was due).

Beside each: the API process's CPU µs per request and its Redis commands and round trips per
request (section 7). `--profile` adds a py-spy profile of the API at its maximum rate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import profiling
from bench.apis import API_KEY, BENCH_PARTITIONS, ApiProcess, loadgen, measure, refused, start_stub, wait_http
from bench.dataset import delete_prefix
from bench.decision import views
from bench.harness import RESULTS_DIR, Contender, Context, Figure, Sample, interleave, relate, single
from bench.procs import Child, spawn
from services.names import RedisKeys
from services.partitions import partition_of

SECTION = "4 decision"
CONCURRENCY = 32
LAST_MAX_RATE = 1121
"""Requests/s of the decision API at its maximum in the last run before issue 18 (docs/performance.md,
phase 3 run B, bench/results/full-20261201T171648Z.json): issue 18's target is twice it."""


def sample_of(result: dict[str, Any], value: float) -> Sample:
    return Sample(value, {
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "cpu_us_per_request": result["cpu_us_per_request"],
        "redis_commands_per_request": result["redis_commands_per_request"],
        "redis_round_trips_per_request": result["redis_round_trips_per_request"],
    })


async def populate(api: ApiProcess, redis_prefix: str, customers: int) -> None:
    keys = RedisKeys(redis_prefix)
    texts = views(customers)
    async with api.redis.pipeline(transaction=False) as pipe:
        for n, text in enumerate(texts):
            customer = f"c{n}"
            pipe.hset(keys.partition(partition_of(customer, BENCH_PARTITIONS)).views(), customer, text)
        await pipe.execute()


async def run(ctx: Context) -> list[Figure]:
    customers, seconds = ctx.size("decision_customers"), ctx.size("http_seconds")
    redis_prefix = f"bench:{ctx.run_id}:decision:"
    api = await ApiProcess.start(ctx, "api-decision", f"bench{ctx.run_id}d.", redis_prefix)
    stub, stub_port = await start_stub(ctx)
    floor, floor_port = await start_floor(ctx)
    spec = {"kind": "decision", "key": API_KEY, "customers": customers}
    try:
        await populate(api, redis_prefix, customers)
        ctx.say(f"  section 4: {customers:,} snapshots; {seconds:g} s per run, {CONCURRENCY} connections")
        await loadgen(api.port, spec, duration_s=min(1.0, seconds), concurrency=CONCURRENCY, workdir=ctx.workdir)

        async def ceiling() -> Sample:
            result = await loadgen(stub_port, {"kind": "get"}, duration_s=seconds, concurrency=CONCURRENCY,
                                   workdir=ctx.workdir)
            return Sample(result["rate"], {"p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                                           "generator_cpu_us_per_request": result["generator_cpu_s"]
                                           / max(1, result["count"]) * 1e6})

        async def framework() -> Sample:
            cpu0 = floor.cpu_s()
            result = await loadgen(floor_port, spec, duration_s=seconds, concurrency=CONCURRENCY, workdir=ctx.workdir)
            _check(result)
            cpu_us = (floor.cpu_s() - cpu0) / max(1, result["count"]) * 1e6
            return Sample(result["rate"], {"p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                                           "cpu_us_per_request": cpu_us})

        async def maximum() -> Sample:
            result = await measure(api, spec, ctx=ctx, duration_s=seconds, concurrency=CONCURRENCY)
            _check(result)
            return sample_of(result, result["rate"])

        def at(rate: int) -> Callable[[], Awaitable[Sample]]:
            async def open_loop() -> Sample:
                result = await measure(api, spec, ctx=ctx, mode="open", rate=rate, duration_s=seconds,
                                       concurrency=64)
                _check(result)
                sample = sample_of(result, result["p99_ms"])
                sample.also["achieved_per_s"] = result["rate"]
                return sample
            return open_loop

        contenders = [
            Contender(SECTION, "load generator ceiling (stub server, closed loop)", "requests/s", ceiling,
                      short="generator ceiling"),
            Contender(SECTION, "FastAPI floor: one route, no I/O (closed loop)", "requests/s", framework,
                      short="FastAPI floor"),
            Contender(SECTION, "decision API, max rate (closed loop)", "requests/s", maximum,
                      target=f">= {2 * LAST_MAX_RATE:,} on one process (2x {LAST_MAX_RATE:,})"),
            *[Contender(SECTION, f"decision API at {rate:,}/s open loop: p99", "ms", at(rate),
                        target="<= 5 ms" if rate == 1000 else None) for rate in ctx.size("decision_rates")],
        ]
        figures = await interleave(contenders, ctx.rounds, say=ctx.say)
        relate(figures[1], figures[0])
        relate(figures[2], figures[1])
        if ctx.profile:
            await profile(ctx, api, spec, seconds)
        return figures + _redis_figure(figures[2])
    finally:
        stub.kill9()
        floor.kill9()
        await delete_prefix(api.redis, redis_prefix)
        await api.stop()


async def start_floor(ctx: Context) -> tuple[Child, int]:
    import os
    import sys

    from fatigue.embedded import free_port

    port = free_port()
    child = spawn("api-floor", [sys.executable, "-m", "bench.api_floor", "--port", str(port)], dict(os.environ),
                  ctx.workdir / "floor")
    await wait_http(f"http://127.0.0.1:{port}/v1/customers/c1/decision?channel=email", child)
    return child, port


def _check(result: dict[str, Any]) -> None:
    problem = refused(result, 200)
    if problem:
        raise RuntimeError(f"decision requests failed: {problem}")


def _redis_figure(maximum: Figure) -> list[Figure]:
    commands = maximum.also.get("redis_commands_per_request", float("nan"))
    trips = maximum.also.get("redis_round_trips_per_request", float("nan"))
    return [single("7 redis", "decision API: Redis commands per request", "commands",
                   [Sample(commands, {"round_trips": trips})])]


async def profile(ctx: Context, api: ApiProcess, spec: dict[str, Any], seconds: float) -> None:
    import asyncio

    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw = RESULTS_DIR / "profiles" / f"decision-{stamp}.collapsed"
    task = asyncio.create_task(loadgen(api.port, spec, duration_s=seconds + 2, concurrency=CONCURRENCY,
                                       workdir=ctx.workdir))
    await asyncio.sleep(1)
    ok = await profiling.record(api.child.pid, seconds, raw)
    await task
    if ok:
        summary = profiling.summarize(raw)
        raw.with_suffix(".txt").write_text(summary + "\n")
        ctx.say(f"  profile of the decision API at max rate ({raw.with_suffix('.txt')}):\n{summary}")
    else:
        ctx.say("  py-spy not available or not permitted: no profile")
