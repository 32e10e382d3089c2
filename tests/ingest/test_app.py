"""HTTP behaviour decided before Kafka or Redis are touched: auth, limits, body errors, docs, health.

No infrastructure: the app points at closed loopback ports, which these requests never reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from ingest.app import create_app, load_settings
from services.errors import ConfigError
from services.settings import IngestSettings
from tests.ingest.helpers import OTHER_SECRET, event, ingest_settings_for, running_api

LIMIT_BYTES = 4096
MAX_EVENTS = 5


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    settings = ingest_settings_for(max_body_bytes=LIMIT_BYTES, max_events_per_request=MAX_EVENTS)
    async with running_api(settings) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert fragment in body["error"]["message"]


PROVIDER_WEBHOOKS = {"/v1/adapters/sendgrid", "/v1/adapters/mailgun", "/v1/adapters/twilio/status",
                     "/v1/adapters/twilio/inbound", "/v1/adapters/crm/{mapping}"}
"""Called by providers, which cannot send our bearer key: each authenticates itself (tests/ingest/adapters)."""


def v1_routes() -> list[tuple[str, str]]:
    """Every documented /v1 operation behind the API key, with example path parameters."""
    paths = create_app(ingest_settings_for()).openapi()["paths"]
    routes = [
        (method.upper(), path.replace("{customer_id}", "c1").replace("{subscription_id}", "sub_x")
         .replace("{delivery_id}", "msg_x"))
        for path, operations in paths.items()
        if path.startswith("/v1") and path not in PROVIDER_WEBHOOKS
        for method in operations
    ]
    # + DELETE customer, PATCH subscription, rotate-secret, test, replay; 3 deliveries; adapters/rejected;
    # customer lists
    assert len(routes) == 21
    return routes


@pytest.mark.parametrize(("method", "path"), v1_routes())
@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing header Authorization"),
        ({"Authorization": "Bearer not-a-configured-key-000"}, "not recognised"),
        ({"Authorization": "Basic Y3JtOnNlY3JldA=="}, "missing header Authorization"),
        ({"Authorization": "Bearer"}, "missing header Authorization"),
    ],
)
async def test_every_v1_route_needs_a_known_bearer_key(
    api: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], fragment: str
) -> None:
    api.headers.pop("Authorization")
    response = await api.request(method, path, headers=headers, json={})
    assert_error(response, 401, "unauthorized", fragment)
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_second_key_is_accepted_too(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/events", content=b"[]", headers={"Authorization": f"Bearer {OTHER_SECRET}"})
    assert_error(response, 422, "invalid_body", "empty array")  # past auth


async def test_body_over_content_length_limit_is_refused_unread(api: httpx.AsyncClient) -> None:
    body = json.dumps([event(event_id=str(i), attributes={"pad": "x" * 900}) for i in range(5)])
    assert len(body) > LIMIT_BYTES
    response = await api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large", f"larger than the limit of {LIMIT_BYTES} bytes")


async def test_chunked_body_over_limit_is_refused_while_reading(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(10):
            yield json.dumps(event(attributes={"pad": "x" * 900})).encode() + b","
        yield b"{}]"

    for path, method in (("/v1/events", "POST"), ("/v1/customers/c1/profile", "PUT")):
        response = await api.request(method, path, content=chunks())
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large", str(LIMIT_BYTES))


async def test_too_many_events(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/events", json=[event(event_id=str(i)) for i in range(MAX_EVENTS + 1)])
    assert_error(response, 413, "too_many_events", f"{MAX_EVENTS + 1} events in one request; at most {MAX_EVENTS}")


@pytest.mark.parametrize(
    ("content", "status", "code", "fragment"),
    [
        (b'{"event_id": "e1",', 400, "invalid_json", "not valid JSON: unexpected end of data at line 1"),
        (b"", 400, "invalid_json", "empty"),
        (b'"hello"', 422, "invalid_body", "not string"),
        (b"[]", 422, "invalid_body", "empty array"),
    ],
)
async def test_unusable_bodies(api: httpx.AsyncClient, content: bytes, status: int, code: str, fragment: str) -> None:
    assert_error(await api.post("/v1/events", content=content), status, code, fragment)


async def test_all_items_rejected_is_422_with_the_accepted_shape(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/events", json=[event(channel="fax"), event(occurred_at="2026-01-01T00:00:00")])
    assert_error(response, 422, "all_events_rejected", "all 2 events were rejected")
    body = response.json()
    assert body["accepted"] == 0 and body["duplicates"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert body["rejected"][0]["error"].startswith("channel: 'fax' is not one of email, sms")
    assert "is not RFC 3339 with an offset" in body["rejected"][1]["error"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "fragment"),
    [
        ("PUT", "/v1/customers/has%20space/profile", {}, 422, "customer_id (in path): 'has space' may only contain"),
        ("PUT", "/v1/customers/c1/profile", {"tier": "Z"}, 422, "tier: 'Z' is not one of A, B, C"),
        ("PUT", "/v1/customers/c1/profile", {"timezone": "Mars/Base"}, 422, "'Mars/Base' is not an IANA time zone"),
        ("PUT", "/v1/customers/c1/profile", {"vip": True}, 422, "vip: is not a known field"),
        ("GET", "/v1/customers/" + "x" * 201, None, 422, "customer_id (in path): must have at most 200 characters"),
        ("POST", "/v1/subscriptions", {"url": "https://x.example", "events": []}, 422, "events: must have at least 1"),
        ("POST", "/v1/subscriptions", {"url": "https://x.example", "events": ["x"]}, 422,
         "events[0]: 'x' is not one of fatigue.throttle, fatigue.re_engage, fatigue.recovered"),
        ("POST", "/v1/subscriptions", {"events": ["fatigue.throttle"]}, 422, "url: is required"),
    ],
)
async def test_request_validation_uses_the_error_shape(
    api: httpx.AsyncClient, method: str, path: str, payload: object, status: int, fragment: str
) -> None:
    assert_error(await api.request(method, path, json=payload), status, "invalid_request", fragment)


async def test_profile_body_that_is_not_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.put(
        "/v1/customers/c1/profile", content=b"{tier", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json", "not valid JSON")
    form = await api.put("/v1/customers/c1/profile", content=b"tier=A", headers={"Content-Type": "text/plain"})
    assert_error(form, 422, "invalid_request", "body: must be a JSON object sent with Content-Type: application/json")


async def test_unknown_route_and_method_use_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await api.delete("/v1/events"), 405, "method_not_allowed")


async def test_healthz_and_metrics_need_no_key(api: httpx.AsyncClient) -> None:
    api.headers.pop("Authorization")
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    await api.post("/v1/events", content=b"nope")  # one refused request, counted
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'fatigue_ingest_requests_refused_total{reason="auth"} 1.0' in metrics.text


async def test_refusals_are_counted_by_reason(api: httpx.AsyncClient) -> None:
    await api.post("/v1/events", content=b"{")
    await api.post("/v1/events", content=b"x" * (LIMIT_BYTES + 1))
    await api.post("/v1/events", json=[event(channel="fax")])
    text = (await api.get("/metrics")).text
    assert 'fatigue_ingest_requests_refused_total{reason="body"} 1.0' in text
    assert 'fatigue_ingest_requests_refused_total{reason="size"} 1.0' in text
    assert 'fatigue_ingest_events_total{outcome="rejected"} 1.0' in text


async def test_openapi_documents_bodies_auth_and_errors(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "EventIn" in spec["components"]["schemas"] and "HTTPValidationError" not in spec["components"]["schemas"]
    events_body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/EventIn"} in events_body["anyOf"]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert bool(operation.get("security")) == path.startswith("/v1"), path
    assert (await api.get("/docs")).status_code == 200


def test_create_app_refuses_to_run_without_keys() -> None:
    with pytest.raises(ConfigError, match="FATIGUE_API_KEYS"):
        create_app(IngestSettings())


def test_settings_from_an_environment_without_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FATIGUE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API key configured: set FATIGUE_API_KEYS"):
        load_settings()
    monkeypatch.setenv("FATIGUE_API_KEYS", "crm:crm-secret-0123456789")
    monkeypatch.setenv("FATIGUE_PORT", "99999")
    with pytest.raises(ConfigError, match="invalid API settings"):
        load_settings()


def test_fatigue_api_without_keys_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FATIGUE_")}
    done = subprocess.run(
        [sys.executable, "-m", "fatigue.cli", "api"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode != 0
    assert "fatigue api: no API key configured: set FATIGUE_API_KEYS" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_query_parameter_given_twice_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/deliveries?status=failed&status=pending")
    assert_error(response, 422, "invalid_request", "'status' is given more than once")
