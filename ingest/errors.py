"""One error shape for every API failure: `{"error": {"code": ..., "message": ...}}`.

`ApiError` subclasses Starlette's HTTPException on purpose: FastAPI re-raises HTTPExceptions that
happen while it reads a request body, so a size-limit error raised from the body stream reaches
the handler below instead of turning into a generic 400.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ingest.validation import describe_errors
from services.errors import BrokerUnavailable, StoreUnavailable
from services.snapshots import SnapshotUnreadable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What 503 answers put in `Retry-After`."""

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An error answered with the shared error body; `code` is stable, `message` is for humans."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, message, headers)
        self.code = code
        self.message = message
        self.extra = dict(extra or {})


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, **extra}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, **error.extra),
        status_code=error.status_code,
        headers=dict(error.headers or {}),
    )


def service_unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def broker_unavailable(exc: BrokerUnavailable) -> ApiError:
    """What the client is told; the details (which broker, which error) go to the server log only."""
    log.warning("event log unavailable: %s", exc)
    return service_unavailable(
        "broker_unavailable", "the event log is unavailable: it did not acknowledge the write, nothing was stored; "
        "retry after Retry-After"
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "error")
    return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(ApiError(400, "invalid_json", json_error_message(errors)))
    return error_response(ApiError(422, "invalid_request", describe_errors(errors, request_locations=True)))


def json_error_message(errors: list[Any]) -> str:
    err = next(err for err in errors if err.get("type") == "json_invalid")
    position = err["loc"][-1]
    reason = (err.get("ctx") or {}).get("error", "invalid JSON")
    return f"request body is not valid JSON: {reason} at character {position}"


async def _broker_unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerUnavailable)
    return error_response(broker_unavailable(exc))


async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("state store (Redis) unavailable: %s", exc)
    return error_response(service_unavailable(
        "store_unavailable", "the state store is unavailable: it did not answer; retry after Retry-After"))


async def _snapshot_unreadable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SnapshotUnreadable)
    log.error("%s", exc)
    return error_response(ApiError(500, "bad_snapshot", str(exc)))


CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client went away before it was answered: the access log and
`fatigue_http_requests_total` show it; no client ever receives it."""


async def _client_disconnect(request: Request, _: Exception) -> Response:
    """The client closed the connection before its whole body arrived (or the server closed it for
    taking too long, ingest/server.py): nothing was read, nothing stored, nothing to answer."""
    log.info("%s %s: the client went away before sending the whole body; nothing was stored",
             request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(ApiError(500, "internal_error", "internal error; see the server log"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    app.add_exception_handler(RedisError, _store_unavailable)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(SnapshotUnreadable, _snapshot_unreadable)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)
