"""Per-request telemetry of the API: a request id, one access log line, HTTP RED metrics.

`RequestTelemetry` wraps the whole ASGI app (outside Starlette's error middleware, so a 500 is
seen, counted and carries the request id too):
- the request id is the caller's `X-Request-ID` when it is a sane token (1 to 128 characters of
  letters, digits and `._:-`), else a new one; it is echoed in the response's `X-Request-ID` and
  bound to every log record of the request (`request_id`);
- one access log line per request on the `fatigue.access` logger: method, route template,
  status, duration and the API key's *name* (never the key); the operational endpoints
  (/healthz, /readyz, /metrics) log at DEBUG unless they fail, so probes and scrapes stay quiet;
- `fatigue_http_requests_total{method,route,status}` and
  `fatigue_http_request_duration_seconds{method,route}`, by route template, never the raw path.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.logs import log_context
from services.metrics import HTTP_METHODS, HTTP_UNMATCHED_ROUTE, HttpMetrics
from services.names import HEADER_REQUEST_ID

access_log = logging.getLogger("fatigue.access")

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
KEY_NAME_STATE = "api_key_name"
"""`request.state.api_key_name`: set by the API-key dependency to the authenticated key's name."""


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new random id."""
    wanted = HEADER_REQUEST_ID.lower().encode()
    for name, value in headers:
        if name.lower() == wanted:
            text = value.decode("latin-1").strip()
            if REQUEST_ID_PATTERN.match(text):
                return text
            break
    return uuid.uuid4().hex


def route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template; a mount's path (static assets); else `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    mounted = scope.get("root_path", "")
    if mounted and mounted != root_path:
        return mounted[len(root_path):] or HTTP_UNMATCHED_ROUTE
    return HTTP_UNMATCHED_ROUTE


class RequestTelemetry:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        root_path = scope.get("root_path", "")
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (HEADER_REQUEST_ID.lower().encode(), request_id.encode())]}
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self._record(scope, root_path, status, time.perf_counter() - started)

    def _record(self, scope: Scope, root_path: str, status: int, duration_s: float) -> None:
        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
        route = route_template(scope, root_path)
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.duration.labels(method, route).observe(duration_s)
        quiet = scope.get("path") in QUIET_PATHS and status < 400
        key_name = (scope.get("state") or {}).get(KEY_NAME_STATE, "-")
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %d %.1fms key=%s", method, route, status, duration_s * 1000, key_name,
            extra={"method": method, "route": route, "status": status,
                   "duration_ms": round(duration_s * 1000, 3), "key_name": key_name},
        )


def install_telemetry(app: FastAPI, metrics: HttpMetrics) -> None:
    """Wrap `app`'s whole middleware stack in RequestTelemetry and create its routes' series at zero."""
    build = app.build_middleware_stack

    def build_with_telemetry() -> ASGIApp:
        return RequestTelemetry(build(), metrics)

    app.build_middleware_stack = build_with_telemetry  # type: ignore[method-assign]
    metrics.known_routes(_api_routes(app))


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found += [(method, route.path) for method in sorted(route.methods or ()) if method in HTTP_METHODS]
    return found
