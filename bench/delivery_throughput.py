"""Benchmark of the notifier's sending side: DeliveryScheduler on a real Redis, sending real HTTP.

    python -m bench.delivery_throughput [--deliveries 5000] [--subscriptions 8] [--storm 2000] [--runs 3]

Starts a redis-server on loopback (fatigue/embedded.py) and aiohttp receivers in child processes
that answer 204 at once, then runs the scheduler wired as `notifier.app.run` wires it (concurrency
and per-endpoint cap from NotifierSettings, loopback destinations allowed, a resolver answering
127.0.0.1), without Kafka: deliveries are written straight into the DeliveryStore before the clock
starts. Redis is flushed before every run.

A, fan-out: N deliveries over S `standard` subscriptions (no digest limit), all due now. Wall time
until the store has none pending and N delivered; deliveries/s; Redis commands per delivery, from
INFO commandstats before and after (commands run inside Lua scripts included, the bench's own
polling subtracted) and the client's round trips (requests written to Redis, a pipeline counts once).

B, storm: M alerts for one owner rep on one subscription with DigestLimit(after=5, window_minutes=1),
the store's clock set just after a window start. Time until 5 were sent and the rest folded (only the
digest pending); then the store's clock moves past the window's end and the digest must arrive once,
holding M - 5 alerts.

Every run checks the counts (requests received, unique webhook-ids, store statuses); the exit status
is 1 when any check failed, so the benchmark also guards the behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, ClassVar

import httpx
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from fatigue.embedded import LOOPBACK, free_port, start_redis, wait_for_port
from notifier.app import make_http_client, make_scheduler
from notifier.signing import webhook_id
from services.actions import DIGEST_ITEMS_MAX, Action
from services.delivery.digests import Window, digest_action_id
from services.delivery.store import DeliveryRecord, DeliveryStore, Status
from services.delivery.subscriptions import DigestLimit, Subscription, SubscriptionStore
from services.metrics import NotifierMetrics
from services.names import ACTION_DIGEST, ACTION_THROTTLE
from services.redisio import make_redis
from services.settings import NotifierSettings

STORM_LIMIT = DigestLimit(after=5, window_minutes=1)
STORM_REP = "rep-storm"
WAIT_S = 90.0
"""Longest a run waits for one phase before it counts as failed."""
POLL_S = 0.01
DIGEST_MARKER = f'"type":"{ACTION_DIGEST}"'.encode()


# --- the receiver (a child process: its CPU is not the scheduler's) -----------------------------

def serve_receiver(port: int) -> None:
    """Answer every POST /hook/{name} with 204 at once; GET /stats says what came, POST /reset forgets."""
    ids: Counter[str] = Counter()
    by_path: Counter[str] = Counter()
    transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
    connections = [0]
    digests: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ids[request.headers.get("webhook-id", "")] += 1
        by_path[request.match_info["name"]] += 1
        if request.transport is not None and request.transport not in transports:  # a new TCP connection
            transports.add(request.transport)
            connections[0] += 1
        if DIGEST_MARKER in body:
            data = json.loads(body)["data"]
            digests.append({"owner_rep_id": data["owner_rep_id"], "total": data["total"],
                            "items": len(data["items"]), "omitted": data["omitted"]})
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": sum(ids.values()), "unique": len(ids), "by_path": by_path,
                                  "connections": connections[0], "digests": digests})

    async def reset(request: web.Request) -> web.Response:
        ids.clear()
        by_path.clear()
        connections[0] = 0
        digests.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)


@dataclass
class ReceiverStats:
    requests: int = 0
    unique: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    """TCP connections the requests came on (the sender's keep-alive reuse)."""
    digests: list[dict[str, Any]] = field(default_factory=list)


class Receivers:
    """Receiver processes on loopback; subscription i posts to receiver i % count."""

    def __init__(self, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self._procs: list[subprocess.Popen[bytes]] = []
        self._client = httpx.AsyncClient(trust_env=False, timeout=10)

    def start(self) -> None:
        for port in self.ports:
            proc = subprocess.Popen([sys.executable, "-m", "bench.delivery_throughput", "--receiver", str(port)],
                                    stdin=subprocess.DEVNULL)
            self._procs.append(proc)
            wait_for_port(port, 20, proc)

    def url(self, n: int, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[n % len(self.ports)]}/hook/{name}"

    async def reset(self) -> None:
        for port in self.ports:
            (await self._client.post(f"http://{LOOPBACK}:{port}/reset")).raise_for_status()

    async def stats(self) -> ReceiverStats:
        total = ReceiverStats()
        for port in self.ports:
            response = await self._client.get(f"http://{LOOPBACK}:{port}/stats")
            response.raise_for_status()
            one = response.json()
            total.requests += one["requests"]
            total.unique += one["unique"]  # paths are distinct per receiver, webhook-ids per subscription
            total.by_path.update(one["by_path"])
            total.connections += one["connections"]
            total.digests += one["digests"]
        return total

    async def aclose(self) -> None:
        await self._client.aclose()

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- Redis command counting -----------------------------------------------------------------------

class CountingConnection(Connection):
    """A Connection counting what it writes to Redis: one per command, one per pipeline or transaction."""

    round_trips: ClassVar[int] = 0

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        await super().send_packed_command(command, check_health)


@dataclass(frozen=True)
class CommandCount:
    calls: Counter[str]
    round_trips: int

    def minus(self, before: CommandCount, own_calls: Counter[str]) -> CommandCount:
        calls = Counter(self.calls)
        calls.subtract(before.calls)
        calls.subtract(own_calls)
        return CommandCount(+calls, self.round_trips - before.round_trips)


class Env:
    """The Redis server and clients, the receivers and the settings shared by every run."""

    def __init__(self, settings: NotifierSettings, receivers: Receivers) -> None:
        self.settings = settings
        self.receivers = receivers
        self.redis = make_redis(settings)  # the scheduler's, wired as in production but counting
        assert isinstance(self.redis, Redis), "the delivery bench runs on one Redis"
        self.redis.connection_pool.connection_class = CountingConnection
        self.probe = make_redis(settings)  # the bench's own polling
        self.own_calls: Counter[str] = Counter()

    async def close(self) -> None:
        await self.redis.aclose()
        await self.probe.aclose()

    def store(self, clock: Callable[[], float] = time.time) -> DeliveryStore:
        s = self.settings
        return DeliveryStore(self.redis, s.keys, delivered_ttl_s=s.delivered_ttl_s,
                             dead_letter_ttl_s=s.dead_letter_ttl_s, clock=clock)

    async def fresh(self) -> None:
        await self.probe.flushall()
        await self.receivers.reset()

    async def commands(self) -> CommandCount:
        stats = await self.probe.info("commandstats")
        calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                         if name != "cmdstat_info"})
        return CommandCount(calls, CountingConnection.round_trips)

    async def counts(self, *statuses: Status) -> dict[Status, int]:
        async with self.probe.pipeline(transaction=False) as pipe:
            for status in statuses:
                pipe.zcard(self.settings.keys.deliveries_in(status, 0))  # one Redis: one delivery shard
            values = await pipe.execute()
        self.own_calls["zcard"] += len(statuses)
        return {status: int(v) for status, v in zip(statuses, values, strict=True)}

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], task: asyncio.Task[None], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not await condition():
            if task.done():
                task.result()
                raise Failed(f"the scheduler ended while waiting for {what}")
            if time.monotonic() > deadline:
                raise Failed(f"timed out after {WAIT_S:g} s waiting for {what}")
            await asyncio.sleep(POLL_S)

    @contextlib.asynccontextmanager
    async def scheduler(self, store: DeliveryStore, metrics: NotifierMetrics) -> AsyncIterator[asyncio.Task[None]]:
        """The scheduler running, as `notifier.app.run` builds it (the resolver answers 127.0.0.1)."""
        s = self.settings
        def loopback(host: str, port: int) -> list[str]:
            return [LOOPBACK]

        async with make_http_client(s, loopback) as client:
            scheduler = make_scheduler(s, self.redis, store, client, metrics, loopback)
            stop = asyncio.Event()
            task = asyncio.create_task(scheduler.run(stop))
            try:
                yield task
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=WAIT_S)


class Failed(Exception):
    """A run that did not reach its end state in time."""


class Clock:
    """Real time plus an offset the bench moves (the DeliveryStore's clock)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def alert(n: int, rep: str) -> Action:
    return Action(v=1, action_id=f"act_bench_{n:06d}_{time.monotonic_ns()}", type=ACTION_THROTTLE,
                  customer_id=f"cust-{n}", at=datetime.now(UTC).isoformat(), status="throttled",
                  previous_status="normal",
                  reasons=[{"rule": "frequency_cap", "window": "7d", "observed": 6.0, "threshold": 5.0}],
                  suggestion="pause outreach for 3 days", owner_rep_id=rep, profile=None,
                  counts={"7d": {"touches": 6, "responses": 0}})


def metric(registry: CollectorRegistry, name: str, **labels: str) -> int:
    return int(registry.get_sample_value(name, labels) or 0)


# --- the scenarios --------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    per_s: float
    commands: CommandCount
    units: int
    """Deliveries (A) or alerts (B) the command counts are divided by."""
    deferred: dict[str, int]
    failures: list[str]
    extra: dict[str, float] = field(default_factory=dict)

    def per_unit(self) -> float:
        return sum(self.commands.calls.values()) / self.units

    def trips_per_unit(self) -> float:
        return self.commands.round_trips / self.units


def check(failures: list[str], ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)


def deferrals(registry: CollectorRegistry) -> dict[str, int]:
    return {reason: metric(registry, "fatigue_notifier_deferred_total", reason=reason)
            for reason in ("endpoint_busy", "rate_limit", "circuit_open")}


async def fan_out(env: Env, deliveries: int, subscriptions: int) -> Run:
    await env.fresh()
    store = env.store()
    subs = SubscriptionStore(env.redis, env.settings.keys)
    targets = [await subs.create(env.receivers.url(i, f"a{i}"), [ACTION_THROTTLE]) for i in range(subscriptions)]
    now_ms = store.now_ms()
    records = []
    for n in range(deliveries):
        sub = targets[n % subscriptions]
        action = alert(n, f"rep-{n % 50}")
        records.append(DeliveryRecord.new(webhook_id(action["action_id"], sub.id), action, sub.id, now_ms))
    failures: list[str] = []
    check(failures, len(await store.schedule(records)) == deliveries, "not every delivery was scheduled")
    registry = CollectorRegistry()
    env.own_calls.clear()
    before = await env.commands()
    started = time.perf_counter()
    elapsed = 0.0
    async with env.scheduler(store, NotifierMetrics(registry)) as task:

        async def done() -> bool:
            counts = await env.counts("pending", "delivered", "failed")
            return counts["pending"] == 0 and counts["delivered"] + counts["failed"] >= deliveries

        try:
            await env.wait_for(done, task, f"{deliveries:,} deliveries")
            elapsed = time.perf_counter() - started
        except Failed as exc:
            failures.append(str(exc))
    used = (await env.commands()).minus(before, env.own_calls)
    counts = await env.counts("pending", "delivered", "failed")
    got = await env.receivers.stats()
    check(failures, counts == {"pending": 0, "delivered": deliveries, "failed": 0}, f"store counts {counts}")
    check(failures, got.requests == deliveries, f"receiver got {got.requests:,} requests, not {deliveries:,}")
    check(failures, got.unique == got.requests, f"{got.requests - got.unique} duplicate webhook-ids")
    expected = Counter({f"a{i}": len(range(i, deliveries, subscriptions)) for i in range(subscriptions)})
    check(failures, +got.by_path == +expected, "requests per subscription differ from what was scheduled")
    run = Run(elapsed, deliveries / elapsed if elapsed else 0.0, used, deliveries, deferrals(registry), failures)
    run.extra["connections"] = got.connections
    return run


async def storm(env: Env, alerts: int) -> Run:
    await env.fresh()
    clock = Clock()
    window_ms = STORM_LIMIT.window_ms
    clock.offset_s = (window_ms - int(clock() * 1000) % window_ms + 1_000) / 1000  # 1 s into a fresh window
    store = env.store(clock)
    sub = await SubscriptionStore(env.redis, env.settings.keys).create(
        env.receivers.url(0, "storm"), [ACTION_THROTTLE], digest=STORM_LIMIT)
    now_ms = store.now_ms()
    window = Window.at(now_ms, STORM_LIMIT)
    digest_id = digest_action_id(sub.id, STORM_REP, window)
    actions = [alert(n, STORM_REP) for n in range(alerts)]
    failures: list[str] = []
    scheduled = await store.schedule(DeliveryRecord.new(webhook_id(a["action_id"], sub.id), a, sub.id, now_ms)
                                     for a in actions)
    check(failures, len(scheduled) == alerts, "not every alert was scheduled")
    registry = CollectorRegistry()
    env.own_calls.clear()
    before = await env.commands()
    started = time.perf_counter()
    elapsed, used, digest_s = 0.0, None, 0.0
    async with env.scheduler(store, NotifierMetrics(registry)) as task:
        try:
            elapsed = await _admit_and_fold(env, store, window, task, alerts, started)
            used = (await env.commands()).minus(before, env.own_calls)
            await _storm_state(env, store, sub, digest_id, window, alerts, failures)
            digest_s = await _send_digest(env, store, task, clock, webhook_id(digest_id, sub.id))
            await asyncio.sleep(max(0.5, 2 * env.settings.scheduler_poll_s))  # room for a wrong second digest
        except Failed as exc:
            failures.append(str(exc))
    if used is None:  # the storm failed: the commands up to now
        used = (await env.commands()).minus(before, env.own_calls)
    got = await _digest_sent_once(env, alerts, failures)
    run = Run(elapsed, alerts / elapsed if elapsed else 0.0, used, alerts, deferrals(registry), failures)
    run.extra |= {"digest_s": digest_s, "connections": got.connections}
    return run


async def _admit_and_fold(env: Env, store: DeliveryStore, window: Window, task: asyncio.Task[None], alerts: int,
                          started: float) -> float:
    """Seconds until only the digest is pending; Failed once the storm outlasts its window (a new
    window would admit alerts again)."""

    async def folded() -> bool:
        counts = await env.counts("pending", "delivered", "digested", "failed")
        if store.now_ms() >= window.end_ms:
            raise Failed(f"the storm outlasted its {STORM_LIMIT.window_minutes}-minute window "
                         f"({counts['digested']:,} folded, {counts['pending']:,} pending by then)")
        return counts["pending"] <= 1 and counts["delivered"] + counts["digested"] + counts["failed"] >= alerts

    await env.wait_for(folded, task, "the storm to be admitted and folded")
    return time.perf_counter() - started


async def _storm_state(env: Env, store: DeliveryStore, sub: Subscription, digest_id: str, window: Window,
                       alerts: int, failures: list[str]) -> None:
    """After the storm: 5 sent, the rest digested, the digest alone pending and holding them."""
    folded = alerts - STORM_LIMIT.after
    got = await env.receivers.stats()
    counts = await env.counts("pending", "delivered", "digested", "failed")
    pending = [rec.id for rec in await store.list("pending")]
    shard = env.settings.keys.delivery_shard(webhook_id(digest_id, sub.id))
    items = int(await env.probe.hlen(env.settings.keys.digest_items(digest_id, shard)))
    env.own_calls.update({"zrange": 1, "mget": 1, "hlen": 1})
    check(failures, got.requests == STORM_LIMIT.after, f"receiver got {got.requests} requests during the storm, "
                                                       f"not {STORM_LIMIT.after}")
    check(failures, counts == {"pending": 1, "delivered": STORM_LIMIT.after, "digested": folded, "failed": 0},
          f"store counts after the storm {counts}")
    check(failures, pending == [webhook_id(digest_id, sub.id)], f"pending after the storm: {pending[:3]}")
    check(failures, items == folded, f"the digest holds {items:,} alerts, not {folded:,}")
    check(failures, store.now_ms() < window.end_ms, "the storm outlasted its digest window")


async def _send_digest(env: Env, store: DeliveryStore, task: asyncio.Task[None], clock: Clock,
                       digest_delivery: str) -> float:
    """Move the store's clock to the digest's due time; seconds until it is delivered."""
    rec = await store.get(digest_delivery)
    env.own_calls["get"] += 1
    if rec is None or rec.next_attempt_at_ms is None:
        raise Failed("the digest delivery is missing")
    clock.offset_s += (rec.next_attempt_at_ms - store.now_ms()) / 1000 + 0.001
    moved = time.perf_counter()

    async def sent() -> bool:
        counts = await env.counts("pending", "delivered")
        return counts["pending"] == 0 and counts["delivered"] > STORM_LIMIT.after

    await env.wait_for(sent, task, "the digest")
    return time.perf_counter() - moved


async def _digest_sent_once(env: Env, alerts: int, failures: list[str]) -> ReceiverStats:
    folded = alerts - STORM_LIMIT.after
    got = await env.receivers.stats()
    counts = await env.counts("pending", "delivered", "failed")
    check(failures, len(got.digests) == 1, f"{len(got.digests)} digests received, not 1")
    check(failures, got.requests == got.unique == STORM_LIMIT.after + 1,
          f"{got.requests} requests ({got.unique} webhook-ids) in all, not {STORM_LIMIT.after + 1}")
    expected = {"owner_rep_id": STORM_REP, "total": folded, "items": min(folded, DIGEST_ITEMS_MAX),
                "omitted": folded - min(folded, DIGEST_ITEMS_MAX)}
    check(failures, got.digests[:1] == [expected], f"digest {got.digests[:1]}, expected {expected}")
    check(failures, counts == {"pending": 0, "delivered": STORM_LIMIT.after + 1, "failed": 0},
          f"store counts after the digest {counts}")
    return got


# --- reporting ------------------------------------------------------------------------------------

def breakdown(run: Run, top: int = 12) -> str:
    calls = run.commands.calls
    return ", ".join(f"{name} {n / run.units:.2f}" for name, n in calls.most_common(top))


def run_line(n: int, run: Run, unit: str, units: str) -> str:
    deferred = ", ".join(f"{k} {v:,}" for k, v in run.deferred.items() if v) or "none"
    status = "ok" if not run.failures else "FAILED: " + "; ".join(run.failures)
    return (f"  run {n}: {run.seconds:6.2f} s  {run.per_s:6,.0f} {units}/s  "
            f"Redis {run.per_unit():4.1f} commands ({run.trips_per_unit():4.1f} round trips) per {unit}  "
            f"deferred: {deferred}  HTTP connections {run.extra.get('connections', 0):,.0f}  checks {status}")


def summary(runs: list[Run], unit: str, units: str) -> str:
    return (f"  median: {statistics.median(r.seconds for r in runs):.2f} s  "
            f"{statistics.median(r.per_s for r in runs):,.0f} {units}/s  "
            f"Redis {statistics.median(r.per_unit() for r in runs):.1f} commands "
            f"({statistics.median(r.trips_per_unit() for r in runs):.1f} round trips) per {unit}")


async def main_async(args: argparse.Namespace) -> bool:
    receivers = Receivers(args.receivers)
    with TemporaryDirectory(prefix="bench-delivery-") as workdir:
        redis_server = start_redis(Path(workdir))
        env: Env | None = None
        try:
            receivers.start()
            settings = NotifierSettings(redis_url=f"redis://{LOOPBACK}:{redis_server.port}/0",
                                        allow_loopback_destinations=True)
            env = Env(settings, receivers)
            return await scenarios(env, args)
        finally:
            if env is not None:
                await env.close()
            await receivers.aclose()
            receivers.stop()
            redis_server.stop()


async def scenarios(env: Env, args: argparse.Namespace) -> bool:
    s = env.settings
    print(f"notifier delivery: DeliveryScheduler on an embedded redis-server, {args.receivers} local aiohttp "
          f"receiver(s) answering 204, {args.runs} runs")
    print(f"  concurrency {s.delivery_concurrency}, per endpoint {s.delivery_concurrency_per_endpoint}, "
          f"poll {s.scheduler_poll_s} s (NotifierSettings)")
    fan, burst = [], []
    print(f"A fan-out: {args.deliveries:,} deliveries over {args.subscriptions} standard subscriptions, all due now")
    for n in range(1, args.runs + 1):
        fan.append(await fan_out(env, args.deliveries, args.subscriptions))
        print(run_line(n, fan[-1], "delivery", "deliveries"), flush=True)
    print(summary(fan, "delivery", "deliveries"))
    print(f"  Redis commands per delivery by command (run {args.runs}): {breakdown(fan[-1])}")
    print(f"B storm: {args.storm:,} alerts for one rep on one subscription, "
          f"DigestLimit(after={STORM_LIMIT.after}, window_minutes={STORM_LIMIT.window_minutes})")
    for n in range(1, args.runs + 1):
        burst.append(await storm(env, args.storm))
        print(run_line(n, burst[-1], "alert", "alerts") + f"  digest sent {burst[-1].extra['digest_s'] * 1000:,.0f} ms "
              "after its due time", flush=True)
    print(summary(burst, "alert", "alerts") + "  (admit 5 + fold the rest)")
    print(f"  Redis commands per alert by command (run {args.runs}): {breakdown(burst[-1])}")
    ok = not any(r.failures for r in fan + burst)
    print("checks: all passed" if ok else "checks: FAILED (see the runs above)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=5000, help="scenario A: deliveries")
    parser.add_argument("--subscriptions", type=int, default=8, help="scenario A: subscriptions")
    parser.add_argument("--storm", type=int, default=2000, help="scenario B: alerts for one rep")
    parser.add_argument("--receivers", type=int, default=1, help="receiver processes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # the child process: serve on this port
    args = parser.parse_args()
    if args.receiver is not None:
        serve_receiver(args.receiver)
        return
    if args.storm <= STORM_LIMIT.after or min(args.deliveries, args.subscriptions, args.receivers, args.runs) < 1:
        parser.error("--storm must exceed the digest limit; the other counts must be at least 1")
    if not asyncio.run(main_async(args)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
