"""The notifier's HTTP endpoints: /healthz, /readyz and /metrics, served on its own event loop.

Served by the same event loop that consumes and sends, so an answer at all means the loop runs:
- `/healthz` (liveness): 200 while the consumer loop and the delivery scheduler each went round
  within `stall_s`; 503 naming the one that did not (a stuck loop: restart the process);
- `/readyz` (readiness): 200 once the consumer joined its group (partitions assigned, possibly
  none when there are more notifiers than partitions) and the process is alive; 503 before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiokafka import ConsumerRebalanceListener
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

STALL_S = 60.0
"""A loop that has not gone round for this long is reported stuck (its slowest legitimate round:
one poll batch scheduled in Redis, or one claim of due deliveries)."""


class NotifierHealth(ConsumerRebalanceListener):  # type: ignore[misc]
    """Heartbeats of the two loops and the consumer group state; also the consumer's rebalance listener."""

    def __init__(self, stall_s: float = STALL_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._monotonic = monotonic
        started = monotonic()
        self.beats: dict[str, float] = {"consumer": started, "scheduler": started}
        self.joined = False
        self.assigned: int = 0

    def beat(self, loop: str) -> None:
        self.beats[loop] = self._monotonic()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.joined = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True
        self.assigned = len(assigned)

    def liveness(self) -> dict[str, str]:
        now = self._monotonic()
        return {
            loop: "ok" if now - at <= self.stall_s else f"error: no round for {now - at:.0f}s"
            for loop, at in self.beats.items()
        }

    def readiness(self) -> dict[str, str]:
        checks = self.liveness()
        checks["consumer_group"] = (
            f"ok: {self.assigned} partitions assigned" if self.joined else "error: not joined to the consumer group yet"
        )
        return checks


def _answer(checks: dict[str, str]) -> web.Response:
    ok = all(value.startswith("ok") for value in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


def make_web_app(health: NotifierHealth, registry: CollectorRegistry) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _answer(health.liveness())

    async def readyz(_: web.Request) -> web.Response:
        return _answer(health.readiness())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_web(health: NotifierHealth, registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve the three endpoints on host:port; OSError when the port cannot be bound."""
    runner = web.AppRunner(make_web_app(health, registry), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
