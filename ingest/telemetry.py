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
from starlette.routing import Mount, Route, compile_path
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


class RouteTemplates:
    """The route template a path matches: the OpenAPI schema's paths (static segments win over
    parameters), the app's own non-schema routes (/docs, /openapi.json …) and its mounts (the
    static docs assets, by their prefix); else `unmatched`. Built from the app on first use."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        self._mounts: list[str] = []

    def of(self, path: str) -> str:
        if self._templates is None:
            self._templates, self._mounts = self._build()
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return next((mount for mount in self._mounts if path.startswith(mount + "/")), HTTP_UNMATCHED_ROUTE)

    def _build(self) -> tuple[list[tuple[re.Pattern[str], str]], list[str]]:
        templates = list(self._app.openapi().get("paths", {}))
        templates += [route.path for route in self._app.routes if isinstance(route, Route)]
        templates.sort(key=lambda template: (template.count("{"), template))
        mounts = [route.path for route in self._app.routes if isinstance(route, Mount)]
        return [(compile_path(template)[0], template) for template in dict.fromkeys(templates)], mounts


class RequestTelemetry:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
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
                self._record(scope, status, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, status: int, duration_s: float, request_id: str) -> None:
        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
        route = self.routes.of(scope.get("path", ""))
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.duration.labels(method, route).observe(duration_s)
        quiet = scope.get("path") in QUIET_PATHS and status < 400
        key_name = (scope.get("state") or {}).get(KEY_NAME_STATE, "-")
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %d %.1fms key=%s", method, route, status, duration_s * 1000, key_name,
            extra={"method": method, "route": route, "status": status,
                   "duration_ms": round(duration_s * 1000, 3), "key_name": key_name, "request_id": request_id},
        )


def install_telemetry(app: FastAPI, metrics: HttpMetrics) -> None:
    """Wrap `app`'s whole middleware stack in RequestTelemetry and create its routes' series at zero."""
    build = app.build_middleware_stack
    routes = RouteTemplates(app)

    def build_with_telemetry() -> ASGIApp:
        return RequestTelemetry(build(), metrics, routes)

    app.build_middleware_stack = build_with_telemetry  # type: ignore[method-assign]
    metrics.known_routes(_api_routes(app))


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, route template) of every operation in the OpenAPI schema."""
    return [(method.upper(), path) for path, operations in app.openapi().get("paths", {}).items()
            for method in operations if method.upper() in HTTP_METHODS]
