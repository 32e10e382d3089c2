"""End to end through `fatigue up`: HTTP -> Kafka -> scorer -> Redis -> notifier -> a real receiver.

The receiver verifies every delivery with the Standard Webhooks reference library.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from fatigue.embedded import free_port
from tests.helpers import FAST_GROUP_ENV, over_contacted, stop_process, wait_until
from tests.notifier.receivers import serving_on_loopback

pytestmark = pytest.mark.integration

API_KEY = "e2e-test-key-0123456789"


class Receiver:
    """A real HTTP server on loopback that keeps the verified deliveries."""

    def __init__(self) -> None:
        self.secret = ""
        self.verified: list[dict] = []
        self.unverified: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception as exc:
            self.unverified.append(repr(exc))
            return web.Response(status=400)
        self.verified.append(payload)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    async with serving_on_loopback(rec.handle) as url:
        yield rec, url


@pytest.fixture
def stack_up(infra_env: dict[str, str], tmp_path: Path, unique: str) -> Iterator[str]:
    """`fatigue up` against the session's broker and Redis; yields the API base URL."""
    port = free_port()
    env = {
        **os.environ, **infra_env, **FAST_GROUP_ENV,
        "FATIGUE_API_KEYS": f"e2e:{API_KEY}:all",
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
    }
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fatigue.cli", "up", "--port", str(port), "--workdir", str(tmp_path / "up")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, signal.SIGINT, timeout_s=40)
        log.close()


async def test_thirteen_touches_reach_the_webhook_signed_with_reasons(
    stack_up: str, receiver: tuple[Receiver, str]
) -> None:
    rec, hook_url = receiver
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack_up, headers=headers, timeout=20) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, 60, "the API to be ready")
        created = await client.post("/v1/subscriptions", json={"url": hook_url, "events": ["fatigue.throttle"]})
        assert created.status_code == 201, created.text
        rec.secret = created.json()["secret"]

        events = over_contacted("e2e-cust")  # 13 touches and 3 opens
        posted = await client.post("/v1/events", json=events)
        assert posted.status_code == 202, posted.text
        assert posted.json() == {"accepted": 16, "duplicates": 0, "rejected": []}
        await wait_until(lambda: _some(rec.verified), 90, "a verified fatigue.throttle delivery")
        customer = (await client.get("/v1/customers/e2e-cust")).json()

    (delivery,) = rec.verified
    assert rec.unverified == []
    assert delivery["type"] == "fatigue.throttle"
    assert delivery["data"]["customer_id"] == "e2e-cust"
    assert delivery["data"]["reasons"] == [{"rule": "frequency_cap", "window": "30d", "observed": 13, "threshold": 12}]
    assert customer["status"] == "throttled"
    assert customer["windows"]["30d"]["touches"]["total"] == 13
    assert customer["windows"]["30d"]["touches"]["by_channel"] == {"email": 6, "phone": 7}
    assert customer["last_action"]["type"] == "fatigue.throttle"


async def _some(items: list) -> bool:
    await asyncio.sleep(0)
    return bool(items)


def test_up_on_the_embedded_default_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """The README's run command: embedded broker + Redis, ready, then Ctrl-C stops everything."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.pop("FATIGUE_API_KEYS", None)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fatigue.cli", "up", "--port", str(port), "--workdir", str(tmp_path / "w")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # a terminal's job
        )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.3)
        assert status == 200, log_path.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        code = proc.wait(timeout=60)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]  # services stopped before the broker they talk to
    assert "API key        fk_" in output  # generated and shown when none is configured
    assert "(embedded)" in output and "embedded broker and Redis stopped" in output
    kafka_port = int(re.search(r"Kafka\s+127\.0\.0\.1:(\d+)", output).group(1))
    redis_port = int(re.search(r"Redis\s+redis://127\.0\.0\.1:(\d+)", output).group(1))
    for closed in (port, kafka_port, redis_port):  # API, broker and Redis are all gone
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", closed), timeout=1).close()
