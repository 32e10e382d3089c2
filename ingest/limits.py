"""Request-body size limit for every route: the declared Content-Length and the bytes actually read."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.errors import ApiError, error_response


def body_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"request body is larger than the limit of {limit_bytes} bytes; send smaller batches"
    )


def declared_length(scope: Scope) -> int | None:
    """Content-Length as an int, None when absent; ApiError(400) when it is not a number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise ApiError(400, "bad_request", "Content-Length is not a number") from None
    return None


class BodySizeLimit:
    """Refuse a body larger than `limit_bytes` before reading it (Content-Length) or while reading it.

    A body that grows past the limit while being read raises ApiError(413) from `receive`, which the
    app's error handler answers (FastAPI re-raises HTTPExceptions raised while reading the body).
    """

    def __init__(self, app: ASGIApp, limit_bytes: int, on_refused: Callable[[], None] = lambda: None) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = declared_length(scope)
        except ApiError as exc:
            await error_response(exc)(scope, receive, send)
            return
        if declared is not None and declared > self.limit_bytes:
            self.on_refused()
            await error_response(body_too_large(self.limit_bytes))(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    self.on_refused()
                    raise body_too_large(self.limit_bytes)
            return message

        return limited_receive
