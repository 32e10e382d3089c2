"""The OpenAPI document, complete enough to generate a client from and to fuzz against.

FastAPI derives most of it from the routes; this adds what it cannot see:
- `operationId`s from the route functions' names in camelCase (`post_events` -> `postEvents`);
- the answers every operation can give besides its own: 401 (with `WWW-Authenticate`), 403
  (missing scope), 422 (invalid parameters), 429 (per-key rate, with `Retry-After`), 503 (a
  dependency is unavailable, with `Retry-After`), and 400 / 413 for operations that take a body;
- response headers (`Location`, `ETag`, `Retry-After`) and the error body instead of FastAPI's own
  validation-error shape;
- the models routes read by hand (the event contract, the policy document) as components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

ERROR = {"$ref": "#/components/schemas/ErrorOut"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
COMMON: dict[str, dict[str, Any]] = {
    "401": {"description": "Missing or unknown API key.",
            "headers": {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}},
    "403": {"description": "The API key lacks the scope this operation needs (`required_scope`)."},
    "422": {"description": "A parameter or the body is invalid; the message names the field and the reason."},
    "429": {"description": "The API key is over its rate.", "headers": RETRY_AFTER},
    "503": {"description": "A dependency (the event log or the state store) is unavailable; retry after "
                           "Retry-After.", "headers": RETRY_AFTER},
}
WITH_BODY: dict[str, dict[str, Any]] = {
    "400": {"description": "The body is not valid JSON (or nests too deeply), or a header is malformed."},
    "413": {"description": "The body is larger than FATIGUE_MAX_BODY_BYTES."},
}
HEADERS_BY_STATUS = {
    "201": {"Location": {"description": "The URL of the created resource.", "schema": {"type": "string"}}},
}
ETAG = {"ETag": {"description": 'The stored policy version, e.g. "3" ("0": none stored); use it in If-Match.',
                 "schema": {"type": "string"}}}
HEADERS_BY_OPERATION = {"getPolicy": {"200": ETAG}, "putPolicy": {"200": ETAG}}


def operation_id(route: APIRoute) -> str:
    """`post_events` -> `postEvents`: stable names for generated clients."""
    first, *rest = route.name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def install(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Replace `app.openapi` with one that completes the generated document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            _, defs = models_json_schema(
                [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            complete(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> None:
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            _use_error_shape_for_422(responses)
            if path.startswith("/v1/"):
                for status, spec in _errors_of(operation).items():
                    _add_error(responses, status, spec)
            headers_of = {**HEADERS_BY_STATUS, **HEADERS_BY_OPERATION.get(operation.get("operationId", ""), {})}
            for status, headers in headers_of.items():
                if status in responses:
                    responses[status].setdefault("headers", {}).update(headers)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def _errors_of(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    errors = dict(COMMON)
    if "requestBody" in operation:
        errors.update(WITH_BODY)
    elif any(param.get("in") == "header" for param in operation.get("parameters", [])):
        errors["400"] = {"description": "A header is malformed (e.g. If-Match)."}
    return errors


def _add_error(responses: dict[str, Any], status: str, spec: dict[str, Any]) -> None:
    response = responses.setdefault(status, {"description": spec["description"]})
    response.setdefault("content", {"application/json": {"schema": ERROR}})
    if "headers" in spec:
        response.setdefault("headers", {}).update(spec["headers"])


def _use_error_shape_for_422(responses: dict[str, Any]) -> None:
    """FastAPI documents its own validation-error body; this API answers with ErrorOut instead."""
    content = responses.get("422", {}).get("content", {}).get("application/json", {})
    if content.get("schema") == {"$ref": "#/components/schemas/HTTPValidationError"}:
        content["schema"] = ERROR
