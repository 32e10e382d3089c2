"""The probes of issue 17 (findings 2, 3 and 10) against a real `fatigue api` process: oversized and
slow request heads, slow bodies, oversized batches, a key's rate hammered through an adapter,
garbage to signed webhooks. What is promised: memory does not follow header size, slow connections
are closed, no silent loss, no 5xx, and no traceback in the API's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fatigue.embedded import free_port
from services.settings import CommonSettings
from tests.helpers import service_process
from tests.ingest.helpers import API_SECRET, AUTH, consume

pytestmark = pytest.mark.integration

SLOW_SECRET = "slow-ingest-secret-0001"
TWILIO_TOKEN = "twilio-auth-token-0123456789"
HEADER_TIMEOUT_S = 2
HEADER_MIB = 16
PARALLEL_HEADERS = 16
SLOW_CONNECTIONS = 800


@pytest.fixture
def api_process(infra_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """`fatigue api` as deployed (its own process), with a 2 s head and body timeout."""
    port = free_port()
    env = infra_env | {
        "FATIGUE_API_KEYS": f"crm:{API_SECRET}:all,slow:{SLOW_SECRET}:ingest:5/s",
        "FATIGUE_HOST": "127.0.0.1", "FATIGUE_PORT": str(port), "FATIGUE_LOG_FORMAT": "text",
        "FATIGUE_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "FATIGUE_HTTP_BODY_TIMEOUT_S": "2",
        "FATIGUE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    }
    with service_process("api", env, tmp_path) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid, next(tmp_path.glob("api-*.log"))


@pytest.fixture
async def api(api_process: tuple[str, int, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_process[0], headers=AUTH, timeout=60) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        yield client
    log = api_process[2].read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-4000:]


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


async def send_huge_header(port: int) -> bytes:
    """A request whose one header is HEADER_MIB MiB, sent in 1 MiB writes while the answer is read;
    what came back before the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_all() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(read_all())
    chunk = b"a" * (1024 * 1024)
    try:
        with contextlib.suppress(ConnectionError):  # refused and closed while it still sends
            for part in [b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Huge: "] + [chunk] * HEADER_MIB + [b"\r\n\r\n"]:
                if reading.done():
                    break
                writer.write(part)
                await writer.drain()
        await asyncio.wait_for(reading, 60)
    finally:
        reading.cancel()
        writer.close()
    return bytes(received)


async def test_memory_does_not_follow_header_size(api: httpx.AsyncClient, api_process: tuple[str, int, Path]) -> None:
    """The finding: 16 parallel 16 MiB headers took the API from 86 to 276 MiB."""
    pid = api_process[1]
    before_kib = memory_kib(pid, "VmRSS")
    answers = await asyncio.gather(*(send_huge_header(api.base_url.port or 0) for _ in range(PARALLEL_HEADERS)))
    growth_mib = (memory_kib(pid, "VmHWM") - before_kib) / 1024
    assert growth_mib < 40, f"the API's peak memory grew {growth_mib:.0f} MiB"
    assert all(a.startswith(b"HTTP/1.1 431 ") for a in answers), [a[:40] for a in answers]
    assert (await api.get("/healthz")).status_code == 200


async def test_slow_header_connections_are_closed(api: httpx.AsyncClient) -> None:
    """The finding: 800 connections trickling their heads were never closed."""
    port = api.base_url.port or 0

    async def slow_client() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\n")
        reading = asyncio.ensure_future(reader.read())
        try:
            for _ in range(60):  # one byte a second, for up to a minute
                done, _ = await asyncio.wait({reading}, timeout=1)
                if done:
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X")
            return await asyncio.wait_for(reading, 1) if reading.done() else b"still open"
        except ConnectionError:
            return b""
        finally:
            reading.cancel()
            writer.close()

    started = time.monotonic()
    answers = await asyncio.gather(*(slow_client() for _ in range(SLOW_CONNECTIONS)))
    assert b"still open" not in answers, f"{answers.count(b'still open')} connections never closed"
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) >= SLOW_CONNECTIONS * 0.9
    assert time.monotonic() - started < 55
    assert (await api.get("/healthz")).status_code == 200


async def test_the_record_and_rate_probes_lose_nothing_and_answer_no_5xx(
        api: httpx.AsyncClient, common_settings: CommonSettings) -> None:
    def tasks(first: int, count: int) -> list[dict[str, Any]]:
        return [{"Id": f"00T{i:012d}", "WhoId": "cust-1", "Status": "Completed", "TaskSubtype": "Call",
                 "CompletedDateTime": "2026-05-02T14:30:00.000+0000"} for i in range(first, first + count)]

    too_many = await api.post("/v1/adapters/crm/salesforce-task", json={"records": tasks(0, 3000)})
    assert too_many.status_code == 413, too_many.text
    slow = {"Authorization": f"Bearer {SLOW_SECRET}"}
    started = time.monotonic()
    hammered = await asyncio.gather(*(api.post("/v1/adapters/crm/salesforce-task", json=tasks(10_000 + 100 * n, 100),
                                               headers=slow) for n in range(60)))
    elapsed_s = time.monotonic() - started
    ok = [a for a in hammered if a.status_code == 200]
    assert {a.status_code for a in hammered} <= {200, 429}
    assert len(ok) <= 5 + math.ceil(5 * elapsed_s)
    garbage = await api.post("/v1/adapters/twilio/status", content=b"\xff\xfe%%&&==",
                             headers={"content-type": "application/x-www-form-urlencoded", "Authorization": ""})
    assert garbage.status_code == 401, garbage.text
    stored = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic,
                           expected=100 * len(ok), timeout_s=30, settle_s=2)
    ids = [json.loads(r.value)["event"]["event_id"] for r in stored]
    assert len(ids) == len(set(ids)) == sum(a.json()["accepted"] for a in ok) == 100 * len(ok)
