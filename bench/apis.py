"""Running our API (and the load generator) for sections 3, 4 and 5; CPU and Redis per request.

`ApiProcess` is `fatigue api` as production runs it (bench/procs.py counts its Redis round
trips). `measure` runs one load-generator child (bench/loadgen.py) against it and returns the
generator's figures plus what the API process spent per answered request: its CPU time, the Redis
commands (INFO commandstats delta) and round trips.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.dataset import command_stats, stats_delta
from bench.harness import Context
from bench.procs import EMBEDDED_ENV, Child, service, spawn
from fatigue.embedded import free_port

API_KEY = "bench-key-0123456789abcdef"
KEY_NAME = "bench"


BENCH_PARTITIONS = 6


def api_env(ctx: Context, topic_prefix: str, redis_prefix: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FATIGUE_")}
    env.update(EMBEDDED_ENV)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "REDIS_URL": ctx.redis_url, "FATIGUE_TOPIC_PREFIX": topic_prefix,
        "FATIGUE_REDIS_PREFIX": redis_prefix, "FATIGUE_API_KEYS": f"{KEY_NAME}:{API_KEY}:all",
        "FATIGUE_HOST": "127.0.0.1", "FATIGUE_PORT": str(port), "FATIGUE_ALLOW_LOOPBACK_DESTINATIONS": "true",
        "FATIGUE_PARTITIONS": str(BENCH_PARTITIONS),
    })
    env.update(extra)
    return env


async def wait_http(url: str, child: Child | None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise RuntimeError(f"{child.name} exited {child.proc.returncode}\n{child.log_tail()}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f}s")


@dataclass
class ApiProcess:
    child: Child
    port: int
    redis: Redis

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, ctx: Context, name: str, topic_prefix: str, redis_prefix: str, **extra: str) -> ApiProcess:
        port = free_port()
        child = service(name, "api", api_env(ctx, topic_prefix, redis_prefix, port, **extra), ctx.workdir / name)
        await wait_http(f"http://127.0.0.1:{port}/readyz", child)
        return cls(child, port, Redis.from_url(ctx.redis_url, decode_responses=True))

    async def stop(self) -> None:
        self.child.stop()
        await self.redis.aclose()


def start_loadgen(port: int, spec: dict[str, Any], *, mode: str = "closed", duration_s: float, concurrency: int,
                  rate: float | None = None, drain_s: float = 5.0, workdir: Path) -> tuple[Child, Path]:
    """Start bench/loadgen.py in a child process; `finish_loadgen` waits for (or stops) it."""
    out = workdir / f"loadgen-{time.monotonic_ns()}.json"
    args = [sys.executable, "-m", "bench.loadgen", "run", "--port", str(port), "--spec", json.dumps(spec),
            "--mode", mode, "--duration", str(duration_s), "--concurrency", str(concurrency),
            "--drain", str(drain_s), "--out", str(out)]
    if rate is not None:
        args += ["--rate", str(rate)]
    return spawn(f"loadgen-{mode}", args, dict(os.environ), workdir), out


async def finish_loadgen(child: Child, out: Path, *, stop: bool = False) -> dict[str, Any]:
    """The generator's summary once it ended (SIGTERM first with `stop`: an open loop then reports early)."""
    if stop and child.alive():
        child.proc.terminate()
    while child.alive():
        await asyncio.sleep(0.05)
    if child.proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"load generator exited {child.proc.returncode}\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


async def loadgen(port: int, spec: dict[str, Any], *, workdir: Path, **kwargs: Any) -> dict[str, Any]:
    """Run bench/loadgen.py in a child process and return its summary."""
    child, out = start_loadgen(port, spec, workdir=workdir, **kwargs)
    return await finish_loadgen(child, out)


async def measure(api: ApiProcess, spec: dict[str, Any], *, ctx: Context, unit_per_request: int = 1,
                  **kwargs: Any) -> dict[str, Any]:
    """Load `api` with the generator; its summary plus the API's CPU and Redis use per request."""
    before_stats = await command_stats(api.redis)
    trips0, cpu0 = api.child.round_trips(), api.child.cpu_s()
    result = await loadgen(api.port, spec, workdir=ctx.workdir, **kwargs)
    await asyncio.sleep(0.3)  # the round-trip file is rewritten every 0.2 s
    cpu1, trips1 = api.child.cpu_s(), api.child.round_trips()
    commands = stats_delta(await command_stats(api.redis), before_stats, {"info": 2})
    answered = max(1, result["count"])
    result.update({
        "cpu_us_per_request": (cpu1 - cpu0) / answered * 1e6,
        "redis_commands_per_request": sum(commands.values()) / answered,
        "redis_round_trips_per_request": (trips1 - trips0) / answered,
        "redis_commands": {k: v / answered for k, v in sorted(commands.items(), key=lambda kv: -kv[1])[:6]},
        "units_per_s": result["rate"] * unit_per_request,
    })
    return result


def refused(result: dict[str, Any], expected_status: int) -> str | None:
    """A description of the answers that were not `expected_status`, or None when all were."""
    statuses = {int(k): v for k, v in result["statuses"].items()}
    bad = {k: v for k, v in statuses.items() if k != expected_status}
    if not bad and not result["errors"]:
        return None
    bodies = {k: result["sample_bodies"].get(str(k)) for k in bad}
    return f"statuses {statuses}, connection errors {result['errors']}, e.g. {bodies}"


async def start_stub(ctx: Context) -> tuple[Child, int]:
    port = free_port()
    child = spawn("stub", [sys.executable, "-m", "bench.loadgen", "stub", "--port", str(port)], dict(os.environ),
                  ctx.workdir / "stub")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return child, port
        except OSError:
            await asyncio.sleep(0.05)
    child.kill9()
    raise RuntimeError("stub server did not start")
