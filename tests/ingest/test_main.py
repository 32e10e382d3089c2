"""`fatigue api` (ingest.app.main): a real uvicorn server configured from the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fatigue.embedded import free_port
from services.settings import CommonSettings
from tests.ingest.helpers import API_SECRET, AUTH, consume, event

pytestmark = pytest.mark.integration


async def wait_until_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        assert proc.poll() is None, "the API process exited"
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"API not healthy within {timeout_s}s")


async def test_main_serves_the_api_from_environment_settings(
    infra_env: dict[str, str], common_settings: CommonSettings, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | infra_env | {
        "FATIGUE_API_KEYS": f"crm:{API_SECRET}",
        "FATIGUE_HOST": "127.0.0.1",
        "FATIGUE_PORT": str(port),
        "FATIGUE_MAX_BODY_BYTES": "4096",
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fatigue.cli", "api"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            await wait_until_healthy(client, proc, timeout_s=30)
            accepted = await client.post("/v1/events", json=event(event_id="via-http"), headers=AUTH)
            assert accepted.status_code == 202, accepted.text
            too_big = await client.post("/v1/events", content=b"[" + b" " * 5000 + b"]", headers=AUTH)
            assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
            assert (await client.post("/v1/events", json=event())).status_code == 401
            assert (await client.get("/readyz")).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    log = log_path.read_text()
    assert proc.returncode in (0, -signal.SIGTERM), log  # uvicorn re-raises the signal after a clean stop
    assert "Application shutdown complete" in log
    (record,) = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic, expected=1)
    assert record.key == b"cust-1"
