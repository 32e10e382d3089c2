"""The body-size middleware on its own (raw ASGI), for what an HTTP client will not send."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ingest.limits import BodySizeLimit


async def never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the app must not see a refused request")


async def call(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any]]:
    refused: list[int] = []
    middleware = BodySizeLimit(never_called, limit_bytes=10, on_refused=lambda: refused.append(1))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": headers}
    await middleware(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_content_length_that_is_not_a_number_is_400() -> None:
    assert await call([(b"content-length", b"ten")]) == (
        400, {"error": {"code": "bad_request", "message": "Content-Length is not a number"}}
    )


async def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    status, body = await call([(b"content-length", b"11")])
    assert status == 413 and body["error"]["code"] == "payload_too_large"
