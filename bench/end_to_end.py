"""Section 5: end to end — POST /v1/events -> snapshot in Redis, and -> signed webhook received.

The whole stack as `fatigue up` runs it (API, scorer, notifier processes, bench/procs.py) on the
suite's broker and Redis, a webhook receiver (aiohttp) in this process subscribed through the API.
After a warm-up alert (groups joined), each round posts 13 touches of a new customer in one
request (it trips the throttle; they happened in the last 13 seconds, so they are live events, not
history the scorer tells after its settle) and measures, from just before the POST:

- event -> snapshot: until the customer's snapshot in Redis counts all 13 events (polled every 2 ms);
- event -> webhook: until the receiver holds the customer's `fatigue.throttle`.

Blocks of `e2e_rounds` rounds alternate: idle, then with `e2e_background` events/s posted in the
background (open loop, 10 events per request, spread over 20,000 other customers, so they do not
alert themselves). Each block gives p50 and p99; the figures are medians over the blocks.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiohttp import web
from redis.asyncio import Redis

from bench.apis import API_KEY, BENCH_PARTITIONS, api_env, finish_loadgen, start_loadgen, wait_http
from bench.dataset import create_topics, delete_prefix
from bench.harness import Context, Figure, Sample, load_1m, median, percentile, single
from bench.procs import Child, service, stop_all
from fatigue.embedded import free_port
from scorer.state_values import state_of_value
from services.names import RedisKeys
from services.partitions import partition_of

SECTION = "5 end to end"
LAST_HOOK_LOAD_P99_MS = 282
"""Event -> webhook p99 under 1,000 events/s in the last run before issue 18 (docs/performance.md, phase 3
run B, bench/results/full-20261201T171648Z.json): issue 18's target is not to be worse."""
TOUCHES = 13
BACKGROUND_BATCH = 10


def touches(customer: str) -> list[dict[str, str]]:
    """13 touches of the last 13 seconds: live events (younger than FATIGUE_TIMER_SETTLE_S when processed),
    over the frequency cap, so the batch that counts them tells the throttle at once. Older ones would be
    history, told by the customer's timer after the settle (30 s): the settle would be timed, not the path."""
    now = datetime.now(UTC)
    return [{"event_id": f"{customer}-{i}", "type": "touch", "customer_id": customer, "channel": "email",
             "kind": "promo", "occurred_at": (now - timedelta(seconds=TOUCHES - i)).isoformat()}
            for i in range(TOUCHES)]


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _hook(self, request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        if payload.get("type") == "fatigue.throttle":
            self.arrivals.setdefault(payload["data"]["customer_id"], time.monotonic())
        return web.Response(status=204)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Stack:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.redis_prefix = f"bench:{ctx.run_id}:e2e:"
        self.topic_prefix = f"bench{ctx.run_id}e."
        self.keys = RedisKeys(self.redis_prefix)
        self.port = free_port()
        self.children: list[Child] = []
        self.redis = Redis.from_url(ctx.redis_url, decode_responses=True)
        self.receiver = Receiver()

    async def start(self) -> None:
        await create_topics(self.ctx.bootstrap, self.topic_prefix, 6)
        await self.receiver.start()
        env = api_env(self.ctx, self.topic_prefix, self.redis_prefix, self.port,
                      FATIGUE_SCORER_APP_ID=f"bench-e2e-{self.ctx.run_id}", FATIGUE_WEB_PORT="0",
                      FATIGUE_NOTIFIER_GROUP_ID=f"bench-e2e-notifier-{self.ctx.run_id}",
                      FATIGUE_DATA_DIR=str(self.ctx.workdir / "e2e-data"))
        for name in ("api", "scorer", "notifier"):
            self.children.append(service(f"e2e-{name}", name, env, self.ctx.workdir / "e2e"))
        await wait_http(f"http://127.0.0.1:{self.port}/readyz", self.children[0])

    async def stop(self) -> None:
        stop_all(self.children)
        await self.receiver.stop()
        await delete_prefix(self.redis, self.redis_prefix)
        await self.redis.aclose()

    async def round(self, client: httpx.AsyncClient, customer: str, timeout_s: float = 120) -> tuple[float, float]:
        key = self.keys.partition(partition_of(customer, BENCH_PARTITIONS)).states()
        started = time.monotonic()
        (await client.post("/v1/events", json=touches(customer))).raise_for_status()
        snapshot_at = None
        while customer not in self.receiver.arrivals or snapshot_at is None:
            if snapshot_at is None:
                raw = await self.redis.hget(key, customer)
                if raw and state_of_value(raw).events_counted >= TOUCHES:
                    snapshot_at = time.monotonic()
            if time.monotonic() - started > timeout_s:
                dead = [c.name for c in self.children if not c.alive()]
                raise RuntimeError(f"no state/alert for {customer} within {timeout_s:.0f}s (exited: {dead})\n"
                                   + "\n".join(c.log_tail(10) for c in self.children))
            await asyncio.sleep(0.002)
        return snapshot_at - started, self.receiver.arrivals[customer] - started


async def block(stack: Stack, client: httpx.AsyncClient, label: str, rounds: int) -> tuple[list[float], list[float]]:
    snaps, hooks = [], []
    for n in range(rounds):
        snap, hook = await stack.round(client, f"e2e-{label}-{n}-{time.monotonic_ns()}")
        snaps.append(snap * 1000)
        hooks.append(hook * 1000)
        await asyncio.sleep(0.05)
    return sorted(snaps), sorted(hooks)


def _block_samples(values: list[float], load: float) -> Sample:
    return Sample(percentile(values, 0.99), {"p50_ms": median(values), "max_ms": values[-1] if values else 0.0},
                  load=load)


async def run(ctx: Context) -> list[Figure]:
    rounds, background = ctx.size("e2e_rounds"), ctx.size("e2e_background")
    stack = Stack(ctx)
    results: dict[str, list[Sample]] = {k: [] for k in ("snap idle", "hook idle", "snap load", "hook load")}
    bg_rates: list[float] = []
    await stack.start()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}", headers=headers, timeout=30) as client:
            hook = f"http://127.0.0.1:{stack.receiver.port}/hook"
            (await client.post("/v1/subscriptions", json={"url": hook})).raise_for_status()
            await stack.round(client, f"e2e-warmup-{ctx.run_id}")
            ctx.say(f"  section 5: stack up; {ctx.rounds} x ({rounds} idle + {rounds} rounds under "
                    f"{background:,} events/s)")
            for n in range(ctx.rounds):
                load = load_1m()
                snaps, hooks = await block(stack, client, f"idle{n}", rounds)
                results["snap idle"].append(_block_samples(snaps, load))
                results["hook idle"].append(_block_samples(hooks, load))
                load = load_1m()
                snaps, hooks, rate = await loaded_block(ctx, stack, client, n, rounds, background)
                results["snap load"].append(_block_samples(snaps, load))
                results["hook load"].append(_block_samples(hooks, load))
                bg_rates.append(rate)
                ctx.say(f"    round {n + 1}/{ctx.rounds}: " + "  ".join(
                    f"{k} p50 {v[-1].also['p50_ms']:,.0f} p99 {v[-1].value:,.0f} ms" for k, v in results.items())
                    + f"  (background {rate:,.0f} events/s)")
    finally:
        await stack.stop()
    return _figures(results, background, bg_rates)


async def loaded_block(ctx: Context, stack: Stack, client: httpx.AsyncClient, n: int, rounds: int,
                       background: int) -> tuple[list[float], list[float], float]:
    spec: dict[str, Any] = {"kind": "events", "key": API_KEY, "batch": BACKGROUND_BATCH,
                            "id_prefix": f"bg{ctx.run_id}-{n}", "customers": 20_000, "customer_prefix": "bg"}
    child, out = start_loadgen(stack.port, spec, mode="open", rate=background / BACKGROUND_BATCH, duration_s=600,
                               concurrency=32, drain_s=2, workdir=ctx.workdir)
    try:
        await asyncio.sleep(2.0)  # the background reaches its rate before the first round
        snaps, hooks = await block(stack, client, f"load{n}", rounds)
    finally:
        result = await finish_loadgen(child, out, stop=True)
    return snaps, hooks, result["rate"] * BACKGROUND_BATCH


def _figures(results: dict[str, list[Sample]], background: int, bg_rates: list[float]) -> list[Figure]:
    names = {
        "snap idle": "event -> snapshot, idle: p99", "hook idle": "event -> webhook, idle: p99",
        "snap load": f"event -> snapshot under {background:,} events/s: p99",
        "hook load": f"event -> webhook under {background:,} events/s: p99",
    }
    note = f"background achieved {median(bg_rates):,.0f} events/s" if bg_rates else None
    target = f"<= {LAST_HOOK_LOAD_P99_MS} ms (not worse than the last run's)"
    return [single(SECTION, names[k], "ms", v, target=target if k == "hook load" else None,
                   note=note if k.endswith("load") else None) for k, v in results.items()]
