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
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ingest.validation import describe_errors
from services.errors import BrokerMisconfigured, BrokerUnavailable, RecordRefused, StoreUnavailable
from services.kafka_errors import TOO_LARGE
from services.snapshots import SnapshotUnreadable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What 503 answers put in `Retry-After`."""
REFUSED_STAGE = "api.publish"
"""The `stage` label of records the event log refused, in `fatigue_records_refused_total`."""

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
        "broker_unavailable", "the event log is unavailable: it did not acknowledge the write; retry after "
        "Retry-After (nothing was stored, or what was is recognised as a duplicate then)"
    )


def broker_misconfigured(exc: BrokerMisconfigured) -> ApiError:
    """The brokers refuse this service (authorization, topic, version): an operator must act. The
    details go to the server log only; the client may retry later."""
    log.error("the event log refused this service: %s — %s", exc, exc.operator_action)
    return service_unavailable(
        "broker_misconfigured", "the event log refused this service (its configuration: see the server log); "
        "nothing was stored; retry after Retry-After"
    )


def refusal_text(exc: RecordRefused) -> str:
    """What a client is told about a record the event log refused: the size and the limit, no internals."""
    if exc.reason == TOO_LARGE and exc.record_bytes is not None and exc.limit_bytes is not None:
        return (f"too large for the event log: {exc.record_bytes:,} bytes as a record, the limit is "
                f"{exc.limit_bytes:,} bytes (or lower, per topic); not stored, make it smaller")
    if exc.reason == TOO_LARGE:
        return "too large for the event log (its topic's max.message.bytes); not stored, make it smaller"
    return "refused by the event log as an invalid record; not stored"


def record_refused(exc: RecordRefused) -> ApiError:
    """A record the event log refused for its own properties: 413 when too large, else 422; never retried."""
    log.warning("the event log refused a record: %s", exc)
    if exc.reason == TOO_LARGE:
        return ApiError(413, "record_too_large", f"the record is {refusal_text(exc)}")
    return ApiError(422, "record_refused", f"the record was {refusal_text(exc)}")


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


async def _broker_misconfigured(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerMisconfigured)
    request.app.state.metrics.requests_refused.labels(reason="broker_misconfigured").inc()
    return error_response(broker_misconfigured(exc))


async def _record_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecordRefused)
    request.app.state.metrics.refused_records.labels(stage=REFUSED_STAGE, reason=exc.reason).inc()
    return error_response(record_refused(exc))


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
    app.add_exception_handler(BrokerMisconfigured, _broker_misconfigured)
    app.add_exception_handler(RecordRefused, _record_refused)
    app.add_exception_handler(RedisError, _store_unavailable)
    app.add_exception_handler(RedisClusterException, _store_unavailable)  # a Cluster without a node for a slot
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(SnapshotUnreadable, _snapshot_unreadable)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)
