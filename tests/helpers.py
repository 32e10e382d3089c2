"""Helpers shared by integration tests: service processes, producing events, bounded waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import RedisCluster

from services.contract import EventEnvelope, EventIn, encode
from services.kafka import make_producer
from services.redisio import RedisClient
from services.settings import CommonSettings

T = TypeVar("T")

FAST_GROUP_ENV = {
    # Tansu joins groups quickly only with short timeouts (../shared/TESTING.md).
    "FATIGUE_BROKER_SESSION_TIMEOUT_S": "6",
    "FATIGUE_BROKER_HEARTBEAT_INTERVAL_S": "1",
    "FATIGUE_BROKER_REBALANCE_TIMEOUT_S": "5",
    "FATIGUE_TICK_INTERVAL_S": "0.5",
    "FATIGUE_FETCH_MAX_WAIT_MS": "50",
    # A customer's timers wait this long after their latest event before the clock fires them.
    "FATIGUE_TIMER_SETTLE_S": "1",
}


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


@contextmanager
def service_process(name: str, env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `fatigue <name>` as a child process; always stopped (SIGTERM, then SIGKILL)."""
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fatigue.cli", name],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        stop_process(proc, signal.SIGTERM, timeout_s=20)


class KeptRunning:
    """`fatigue <name>` started again whenever it exits, as `fatigue up` or an orchestrator would; the
    exit codes of the runs that ended on their own are in `exits`."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self._name, self._env, self._log_dir = name, env, log_dir
        self.exits: list[int] = []
        self._stopping = threading.Event()
        self.proc = self._start()
        self._watcher = threading.Thread(target=self._watch, name=f"keep-{name}", daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen[bytes]:
        log_path = self._log_dir / f"{self._name}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log_file:
            return subprocess.Popen([sys.executable, "-m", "fatigue.cli", self._name], env={**os.environ, **self._env},
                                    stdout=log_file, stderr=subprocess.STDOUT)

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            code = self.proc.poll()
            if code is not None and not self._stopping.is_set():
                self.exits.append(code)
                self.proc = self._start()

    def stop(self) -> None:
        self._stopping.set()
        self._watcher.join(timeout=5)
        stop_process(self.proc, signal.SIGTERM, timeout_s=20)


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> int:
    """Send `sig`, wait up to `timeout_s`, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)


def event(
    i: int | str,
    customer_id: str,
    *,
    days_ago: float = 0.0,
    type_: str = "touch",
    channel: str = "email",
    kind: str | None = None,
    in_reply_to: str | None = None,
) -> dict[str, Any]:
    occurred = datetime.now(UTC) - timedelta(days=days_ago)
    body: dict[str, Any] = {
        "event_id": f"e-{customer_id}-{i}",
        "type": type_,
        "customer_id": customer_id,
        "channel": channel,
        "occurred_at": occurred.isoformat(),
    }
    if kind:
        body["kind"] = kind
    if in_reply_to:
        body["in_reply_to"] = in_reply_to
    return body


def over_contacted(customer_id: str, touches: int = 13) -> list[dict[str, Any]]:
    """`touches` touches over the last 29 days, alternating phone and email, from a customer who
    still opens now and then (an `open` after every 4th touch), so the frequency cap is what
    trips, not the unanswered streak."""
    events = []
    for i in range(touches):
        days_ago = 29 - 29 * i / max(touches - 1, 1)
        channel = "email" if i % 2 else "phone"
        events.append(event(i, customer_id, days_ago=days_ago, channel=channel))
        if i % 4 == 3:
            events.append(event(f"open-{i}", customer_id, days_ago=days_ago - 0.04, type_="response",
                                channel=channel, kind="open", in_reply_to=f"e-{customer_id}-{i}"))
    return events


async def produce_events(settings: CommonSettings, events: list[dict[str, Any]], producer_name: str = "tests") -> None:
    """Put events on the events topic the way the API does (envelope, key = customer id, acks=all)."""
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        now = datetime.now(UTC)
        futures = []
        for body in events:
            envelope = EventEnvelope(producer=producer_name, received_at=now, event=EventIn.model_validate(body))
            futures.append(
                await producer.send(settings.events_topic, key=body["customer_id"].encode(), value=encode(envelope))
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---- what the scorer stored, read as the API reads it (per partition; services/snapshots.py) ----


async def stored_snapshots(redis: Any, settings: CommonSettings, customers: list[str],
                           policy: Any = None) -> dict[str, dict[str, Any]]:
    """The snapshots of these customers, computed now from the states the scorer stored in their
    partitions (as GET /v1/customers/{id} computes them); customers without a state left out."""
    from scorer.core.state_codec import decode_state
    from scorer.core.views import snapshot
    from services.partitions import partition_of
    from services.policy.model import default_policy
    from services.snapshots import CustomerReader

    reader = CustomerReader(redis, settings.keys, settings.partitions)
    states = await reader.states([(c, partition_of(c, settings.partitions)) for c in customers])
    now_ms = int(time.time() * 1000)
    return {c: snapshot(decode_state(payload), now_ms, policy or default_policy()) for c, payload in states.items()}


async def stored_snapshot(redis: Any, settings: CommonSettings, customer_id: str,
                          policy: Any = None) -> dict[str, Any] | None:
    return (await stored_snapshots(redis, settings, [customer_id], policy)).get(customer_id)


async def keys_matching(client: RedisClient, pattern: str) -> list[str]:
    """Every key matching `pattern`, sorted: on a Cluster, from every primary (KEYS asks one node)."""
    if isinstance(client, RedisCluster):
        found = await client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    else:
        found = await client.keys(pattern)
    return sorted(str(key) for key in found)
