"""The API's HTTP server (ingest/server.py) over real sockets: bounds on the request head, timeouts
for the head, the body and idle connections (issue 17, finding 10). Short limits, bounded waits.

No infrastructure: the app points at closed ports, which these requests never reach."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from ingest.server import HttpLimits, bounded_protocol
from tests.ingest.helpers import API_SECRET, ingest_settings_for, port_of, serving_api

MAX_HEAD = 4096
MAX_FIELDS = 20
TIMEOUT_S = 0.5
WAIT_S = 15.0
"""How long a test waits for the server to act on a timeout of TIMEOUT_S (a loaded machine is slow)."""


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    settings = ingest_settings_for(http_max_header_bytes=MAX_HEAD, http_max_headers=MAX_FIELDS,
                                   http_header_timeout_s=TIMEOUT_S, http_body_timeout_s=TIMEOUT_S,
                                   http_keepalive_timeout_s=1)
    async with serving_api(settings) as client:
        yield client


async def exchange(port: int, *parts: bytes, pause_s: float = 0.0) -> bytes:
    """Send `parts` (pausing between them, stopping when the server closes), and return what the
    server sent until it closed the connection (waiting at most WAIT_S for that)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_all() -> None:
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(read_all())
    try:
        for part in parts:
            if reading.done():
                break
            try:
                writer.write(part)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            await asyncio.sleep(pause_s)
        await asyncio.wait_for(reading, WAIT_S)
    finally:
        reading.cancel()
        writer.close()
    return bytes(received)


def answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else {}


def get(path: str = "/healthz", *headers: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: api\r\n{''.join(h + chr(13) + chr(10) for h in headers)}\r\n".encode()


async def test_a_head_over_the_byte_limit_is_431_and_the_connection_closed(api: httpx.AsyncClient) -> None:
    status, headers, body = answer(await exchange(port_of(api), get("/healthz", "X-Big: " + "a" * MAX_HEAD)))
    assert status == 431 and headers["connection"] == "close"
    assert body["error"] == {"code": "header_too_large", "message": "the request line and header fields are larger "
                             f"than {MAX_HEAD} bytes (FATIGUE_HTTP_MAX_HEADER_BYTES)"}


async def test_a_head_growing_past_the_limit_is_refused_before_it_ends(api: httpx.AsyncClient) -> None:
    """Memory must not follow a header's size: the head is refused while it still arrives."""
    pieces = [b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Big: "] + [b"a" * 1000] * 50
    raw = await exchange(port_of(api), *pieces, pause_s=0.01)
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:100]


async def test_a_long_url_counts_as_head_too(api: httpx.AsyncClient) -> None:
    raw = await exchange(port_of(api), get("/healthz?q=" + "a" * MAX_HEAD))
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:100]


async def test_more_header_fields_than_allowed_is_431(api: httpx.AsyncClient) -> None:
    many = {f"X-Field-{i}": "1" for i in range(MAX_FIELDS)}
    response = await api.get("/healthz", headers=many)
    assert response.status_code == 431
    assert "more than 20 header fields (FATIGUE_HTTP_MAX_HEADERS)" in response.json()["error"]["message"]
    some = {f"X-Field-{i}": "1" for i in range(MAX_FIELDS - 8)}  # httpx adds a few of its own
    assert (await api.get("/healthz", headers=some)).status_code == 200


async def test_pipelined_requests_are_not_mistaken_for_a_long_head(api: httpx.AsyncClient) -> None:
    requests = b"".join(get("/healthz", "X-Pad: " + "p" * 100) for _ in range(40))
    assert len(requests) > MAX_HEAD
    raw = await exchange(port_of(api), requests + get("/healthz", "Connection: close"))
    assert raw.count(b"HTTP/1.1 200 OK") == 41, raw[:200]


async def test_a_head_not_complete_in_time_is_408_and_closed(api: httpx.AsyncClient) -> None:
    """Slowloris: a head trickled byte by byte is cut off at the head timeout."""
    trickle = [b"GET /healthz HTTP/1.1\r\nHost: api\r\n"] + [b"X"] * 200
    status, headers, body = answer(await exchange(port_of(api), *trickle, pause_s=0.05))
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout" and "FATIGUE_HTTP_HEADER_TIMEOUT_S" in body["error"]["message"]


async def test_a_connection_that_sends_nothing_is_closed(api: httpx.AsyncClient) -> None:
    assert await exchange(port_of(api)) == b""


async def test_a_kept_alive_connection_is_closed_when_idle(api: httpx.AsyncClient) -> None:
    raw = await exchange(port_of(api), get())
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.count(b"HTTP/1.1") == 1  # then closed, without a 408


async def test_a_body_not_complete_in_time_is_408_and_nothing_is_logged_as_an_error(
        api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    head = (f"POST /v1/events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {API_SECRET}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    with caplog.at_level(logging.INFO):
        status, headers, body = answer(await exchange(port_of(api), head, b'[{"event_id": '))
        await asyncio.sleep(0.2)  # the application notices its client is gone
    assert status == 408 and headers["connection"] == "close"
    assert "FATIGUE_HTTP_BODY_TIMEOUT_S" in body["error"]["message"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("went away before sending the whole body" in r.getMessage() for r in caplog.records)


async def test_refusals_are_counted(api: httpx.AsyncClient) -> None:
    port = port_of(api)
    await exchange(port, get("/healthz", "X-Big: " + "a" * MAX_HEAD))
    await exchange(port, b"GET /healthz HTTP/1.1\r\n")
    text = (await api.get("/metrics")).text
    assert 'fatigue_ingest_requests_refused_total{reason="header_too_large"} 1.0' in text
    assert 'fatigue_ingest_requests_refused_total{reason="header_timeout"} 1.0' in text


def test_each_server_gets_its_own_protocol_class() -> None:
    one, two = bounded_protocol(HttpLimits(max_headers=10)), bounded_protocol(HttpLimits(max_headers=20))
    assert (one.limits.max_headers, two.limits.max_headers) == (10, 20)
