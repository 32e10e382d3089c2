"""Benchmark: time from `POST /v1/events` to the signed alert arriving at a webhook.

    python -m bench.alert_latency [--rounds 20]

Starts `fatigue up` on the embedded broker and Redis, subscribes a local receiver, waits for one
warm-up alert (consumer groups joined), then for each round posts 13 touches for a new customer
and measures until the receiver holds that customer's `fatigue.throttle`. Reports median, p90
and max over the rounds. Everything runs on this machine, on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import httpx
from aiohttp import web

from fatigue.embedded import free_port

KEY = "bench-key-0123456789abcdef"


def touches(customer: str) -> list[dict[str, str]]:
    now = datetime.now(UTC)
    return [{"event_id": f"{customer}-{i}", "type": "touch", "customer_id": customer, "channel": "email",
             "occurred_at": (now - timedelta(days=29 - 2 * i)).isoformat()} for i in range(13)]


async def measure(rounds: int, api: str, arrivals: dict[str, float]) -> list[float]:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
        else:
            raise SystemExit("API not ready within 90 s")
        port = int(os.environ["BENCH_HOOK_PORT"])
        (await client.post("/v1/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"})).raise_for_status()
        latencies = []
        for n in range(-1, rounds):  # round -1 is the warm-up
            customer = f"bench-{n + 1}-{time.monotonic_ns()}"
            started = time.monotonic()
            (await client.post("/v1/events", json=touches(customer))).raise_for_status()
            while customer not in arrivals:
                if time.monotonic() - started > 120:
                    raise SystemExit(f"no alert for {customer} within 120 s")
                await asyncio.sleep(0.002)
            if n >= 0:
                latencies.append(arrivals[customer] - started)
        return latencies


async def main_async(rounds: int) -> list[float]:
    arrivals: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        payload = await request.json()
        arrivals.setdefault(payload["data"]["customer_id"], time.monotonic())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    os.environ["BENCH_HOOK_PORT"] = str(port)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    api_port = free_port()
    env = {**os.environ, "FATIGUE_API_KEYS": f"bench:{KEY}", "FATIGUE_LOG_LEVEL": "WARNING"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("REDIS_URL", None)
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen([sys.executable, "-m", "fatigue.cli", "up", "--port", str(api_port),
                                 "--workdir", workdir], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return await measure(rounds, f"http://127.0.0.1:{api_port}", arrivals)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    latencies = sorted(asyncio.run(main_async(args.rounds)))
    ms = [x * 1000 for x in latencies]
    print(f"alert latency, POST /v1/events -> signed webhook received, {len(ms)} rounds (embedded broker)")
    print(f"  median {statistics.median(ms):,.0f} ms  p90 {ms[int(len(ms) * 0.9) - 1]:,.0f} ms  "
          f"min {ms[0]:,.0f} ms  max {ms[-1]:,.0f} ms")


if __name__ == "__main__":
    main()
