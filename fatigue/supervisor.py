"""`fatigue up`: the whole stack in the foreground, on the embedded broker and Redis by default.

Starts (unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set) a Tansu broker and a redis-server on
loopback, creates the topics, then runs the API, the scorer and the notifier as child processes —
the same processes production runs — with their output prefixed. A child that dies is restarted
with backoff. Ctrl-C (or SIGTERM) stops the children, then the embedded servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fatigue.embedded import EmbeddedStack, free_port, start_stack
from services.kafka import ensure_topics
from services.settings import CommonSettings

SERVICES = ("api", "scorer", "notifier")
MAX_BACKOFF_S = 30.0


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


@dataclass
class Plan:
    """Where everything runs; printed for the user and passed to the children as environment."""

    env: dict[str, str]
    api_url: str
    api_key: str | None
    scorer_metrics_url: str
    notifier_metrics_url: str
    embedded: EmbeddedStack | None = None
    notes: list[str] = field(default_factory=list)


def make_plan(host: str, port: int, workdir: Path) -> Plan:
    env = dict(os.environ)
    embedded = None
    if not (env.get("KAFKA_BOOTSTRAP_SERVERS") and env.get("REDIS_URL")):
        embedded = start_stack(workdir)
        env.setdefault("KAFKA_BOOTSTRAP_SERVERS", embedded.kafka_bootstrap_servers)
        env.setdefault("REDIS_URL", embedded.redis_url)
        # The embedded broker: no idempotent producer; short group timeouts (see docs/operations.md).
        env.setdefault("FATIGUE_KAFKA_IDEMPOTENCE", "false")
        env.setdefault("FATIGUE_BROKER_SESSION_TIMEOUT_S", "6")
        env.setdefault("FATIGUE_BROKER_HEARTBEAT_INTERVAL_S", "1")
        env.setdefault("FATIGUE_BROKER_REBALANCE_TIMEOUT_S", "5")
        env.setdefault("FATIGUE_FETCH_MAX_WAIT_MS", "50")  # the embedded broker holds fetches for the full wait
    notes = []
    api_key = None
    if not env.get("FATIGUE_API_KEYS"):
        api_key = "fk_" + secrets.token_urlsafe(24)
        env["FATIGUE_API_KEYS"] = f"local:{api_key}:all"
        notes.append("FATIGUE_API_KEYS was not set: generated a key for this run (shown above).")
    env.setdefault("FATIGUE_ALLOW_LOOPBACK_DESTINATIONS", "true")
    env["FATIGUE_HOST"], env["FATIGUE_PORT"] = host, str(port)
    env.setdefault("FATIGUE_WEB_PORT", str(free_port()))
    env.setdefault("FATIGUE_METRICS_PORT", str(free_port()))
    env.setdefault("FATIGUE_DATA_DIR", str(workdir / "scorer"))
    return Plan(
        env=env,
        api_url=f"http://{host}:{port}",
        api_key=api_key,
        scorer_metrics_url=f"http://127.0.0.1:{env['FATIGUE_WEB_PORT']}/metrics",
        notifier_metrics_url=f"http://127.0.0.1:{env['FATIGUE_METRICS_PORT']}/metrics",
        embedded=embedded,
        notes=notes,
    )


def describe(plan: Plan) -> str:
    env = plan.env
    kind = "embedded" if plan.embedded else "external"
    lines = [
        "",
        "contact-fatigue is starting",
        f"  API            {plan.api_url}   (OpenAPI docs: {plan.api_url}/docs)",
        f"  API key        {plan.api_key or '(from FATIGUE_API_KEYS)'}",
        f"  Kafka          {env['KAFKA_BOOTSTRAP_SERVERS']}  ({kind})",
        f"  Redis          {env['REDIS_URL']}  ({kind})",
        f"  Metrics        {plan.api_url}/metrics  {plan.scorer_metrics_url}  {plan.notifier_metrics_url}",
        "  Stop           Ctrl-C",
        *(f"  Note           {note}" for note in plan.notes),
        "",
    ]
    return "\n".join(lines)


class Child:
    """One service process, restarted with backoff when it dies while we are running."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        backoff_s = 1.0
        while not stopping.is_set():
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fatigue.cli", self.name,
                env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            await self._relay_output()
            code = await self.proc.wait()
            if stopping.is_set():
                return
            backoff_s = 1.0 if time.monotonic() - started > 60 else min(backoff_s * 2, MAX_BACKOFF_S)
            say(f"{self.name:>8} | exited with {code}; restarting in {backoff_s:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff_s)

    async def _relay_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            say(f"{self.name:>8} | {line.decode(errors='replace').rstrip()}")

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def supervise(plan: Plan, stopping: asyncio.Event, after_start: list[asyncio.Task[None]]) -> None:
    created = await ensure_topics(CommonSettings.from_env(plan.env))
    if created:
        say(f"created topics: {', '.join(created)}")
    children = [Child(name, plan.env) for name in SERVICES]
    runners = [asyncio.create_task(child.run(stopping)) for child in children]
    await stopping.wait()
    say("stopping…")
    for task in after_start:
        task.cancel()
    await asyncio.gather(*(child.stop() for child in children))
    await asyncio.gather(*runners, *after_start, return_exceptions=True)
