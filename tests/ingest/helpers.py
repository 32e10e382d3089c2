"""Builders and bounded helpers shared by the ingest tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from fatigue.embedded import free_port
from ingest.app import create_app
from ingest.server import server_config
from scorer.dryrun import check_policy
from services.settings import CommonSettings, IngestSettings

API_KEY_NAME = "crm"
API_SECRET = "crm-secret-0123456789"
OTHER_SECRET = "erp-secret-9876543210"
AUTH = {"Authorization": f"Bearer {API_SECRET}"}


def closed_port_address() -> str:
    """host:port on loopback where nothing listens (a free port just released)."""
    return f"127.0.0.1:{free_port()}"


def ingest_settings_for(common: CommonSettings | None = None, **overrides: Any) -> IngestSettings:
    """IngestSettings for a test: the given infrastructure (or closed ports) and short timeouts."""
    base: dict[str, Any] = (
        common.model_dump()
        if common is not None
        else {"kafka_bootstrap_servers": closed_port_address(), "redis_url": f"redis://{closed_port_address()}/0"}
    )
    base.update(
        api_keys=SecretStr(f"{API_KEY_NAME}:{API_SECRET}:all,erp:{OTHER_SECRET}"),
        kafka_request_timeout_s=5.0,
    )
    base.update(overrides)
    return IngestSettings(**base)


@asynccontextmanager
async def running_api(
    settings: IngestSettings, app_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an authenticated client talking to it in-process."""
    app = create_app(settings, **{"policy_check": check_policy, **(app_options or {})})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ingest.test", headers=AUTH, timeout=30, **client_options
        ) as client:
            yield client


@asynccontextmanager
async def serving_api(
    settings: IngestSettings, app_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app served over real HTTP as `fatigue api` serves it (ingest.server.server_config: uvicorn,
    httptools, the bounded protocol) on a free loopback port of this event loop, and an authenticated
    client talking to it. The client's `base_url` has the port (for raw sockets: `port_of`)."""
    app = create_app(settings, **{"policy_check": check_policy, **(app_options or {})})
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=free_port()))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "the API server did not start"
        base_url = f"http://127.0.0.1:{server.config.port}"
        options = {"base_url": base_url, "headers": AUTH, "timeout": 30, **client_options}
        async with httpx.AsyncClient(**options) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


def port_of(client: httpx.AsyncClient) -> int:
    port = client.base_url.port
    assert port is not None
    return port


def event(**overrides: Any) -> dict[str, Any]:
    """A valid touch event dated a minute ago; override any field (None removes it)."""
    item: dict[str, Any] = {
        "event_id": "ev-1",
        "type": "touch",
        "customer_id": "cust-1",
        "channel": "email",
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "rep_id": "rep-7",
        "kind": "promo",
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


async def consume(
    bootstrap_servers: str, topic: str, *, expected: int, timeout_s: float = 20.0, settle_s: float = 1.0
) -> list[ConsumerRecord]:
    """Read `topic` from the beginning until `expected` records arrived (or timeout_s), then settle_s more."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    records: list[ConsumerRecord] = []
    try:
        deadline = loop.time() + timeout_s
        while len(records) < expected and loop.time() < deadline:
            records += _flatten(await consumer.getmany(timeout_ms=200))
        settle_until = loop.time() + settle_s
        while loop.time() < settle_until:
            records += _flatten(await consumer.getmany(timeout_ms=200))
    finally:
        await consumer.stop()
    return records


def _flatten(batches: dict[Any, list[ConsumerRecord]]) -> list[ConsumerRecord]:
    return [record for records in batches.values() for record in records]


def value_of(record: ConsumerRecord) -> dict[str, Any]:
    return json.loads(record.value)  # type: ignore[no-any-return]
