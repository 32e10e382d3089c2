"""Per-request telemetry of the API (ingest/telemetry.py) and the offline docs. No infrastructure:
Kafka and Redis addresses are closed ports."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from ingest.app import create_app
from ingest.telemetry import request_id_from
from tests.ingest.helpers import API_SECRET, AUTH, ingest_settings_for


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    built = create_app(ingest_settings_for(redis_url="redis://127.0.0.1:9/0"))

    async def boom() -> None:
        raise RuntimeError("unexpected")

    built.add_api_route("/boom", boom)
    async with built.router.lifespan_context(built):
        yield built


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test", headers=AUTH) as http:
        yield http


def sample(app: FastAPI, name: str, **labels: str) -> float | None:
    return app.state.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


async def test_counts_by_route_template_never_the_raw_path(app: FastAPI, client: httpx.AsyncClient) -> None:
    route = "/v1/customers/{customer_id}"
    assert sample(app, "fatigue_http_requests_total", method="GET", route=route, status="500") == 0  # created at 0
    for customer in ("a", "b"):
        response = await client.get(f"/v1/customers/{customer}")
        assert response.status_code == 503, response.text  # Redis is a closed port
    await client.get("/no/such/path")
    assert sample(app, "fatigue_http_requests_total", method="GET", route=route, status="503") == 2
    assert sample(app, "fatigue_http_request_duration_seconds_count", method="GET", route=route) == 2
    assert sample(app, "fatigue_http_requests_total", method="GET", route="unmatched", status="404") == 1
    scraped = (await client.get("/metrics")).text
    assert "/v1/customers/a" not in scraped and "/no/such/path" not in scraped
    assert "process_cpu_seconds_total" in scraped and "python_info" in scraped and "fatigue_build_info{" in scraped


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-7f:abc.1"})
    assert given.headers["X-Request-ID"] == "trace-7f:abc.1"
    for bad in ("", "has space", "x" * 129, "semi;colon"):
        made = await client.get("/healthz", headers={"X-Request-ID": bad})
        assert made.headers["X-Request-ID"] != bad and len(made.headers["X-Request-ID"]) == 32
    assert len(request_id_from([])) == 32


async def test_an_unhandled_error_is_counted_and_carries_the_request_id(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "req-boom"
    assert sample(app, "fatigue_http_requests_total", method="GET", route="/boom", status="500") == 1


async def test_one_access_line_per_request_with_the_key_name_never_the_key(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="fatigue.access"):
        await client.get("/v1/policy", headers={"X-Request-ID": "req-ok"})
        await client.get("/v1/policy", headers={"Authorization": "Bearer wrong-key-0123456789", "X-Request-ID": "r2"})
        await client.get("/healthz")
    lines = [r for r in caplog.records if r.name == "fatigue.access"]
    assert len(lines) == 3
    ok, refused, probe = lines
    assert (ok.method, ok.route, ok.key_name, ok.request_id) == ("GET", "/v1/policy", "crm", "req-ok")  # type: ignore[attr-defined]
    assert (refused.status, refused.key_name) == (401, "-")  # type: ignore[attr-defined]
    assert ok.levelno == refused.levelno == logging.INFO
    assert probe.levelno == logging.DEBUG  # probes and scrapes stay out of the INFO log
    assert API_SECRET not in caplog.text and "wrong-key-0123456789" not in caplog.text


async def test_docs_work_offline(client: httpx.AsyncClient) -> None:
    pages = (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",)))
    for page, asset_names in pages:
        html = (await client.get(page)).text
        assert "cdn." not in html and "fonts.googleapis" not in html, page
        for name in asset_names:
            assert f"/static-offline-docs/{name}" in html, page
            asset = await client.get(f"/static-offline-docs/{name}")
            assert asset.status_code == 200 and len(asset.content) > 10_000, name
