"""The API's HTTP server: uvicorn with uvloop and httptools, with bounds uvicorn does not set.

uvicorn's httptools protocol bounds neither the request head nor the time a client takes to send
it: httptools joins a header's pieces in memory as they arrive (a 16 MiB header is held whole, and
joining it copies it again and again), and a connection that trickles its head, or sends nothing,
stays open for good. `BoundedHttpToolsProtocol` adds per connection (docs/configuration.md#http-server):

- **head size** — the request line and header fields together at most `max_header_bytes`, at most
  `max_headers` fields: `431 Request Header Fields Too Large` (RFC 6585 §5) and the connection is
  closed. The bytes are counted as they arrive, so what is held never follows a header's size.
- **head timeout** — the whole head within `header_timeout_s` of the connection opening (its first
  request) or of the first byte of a later request: `408 Request Timeout` (RFC 9110 §15.5.9) and
  closed; a connection that sent nothing is closed without an answer.
- **body timeout** — the whole body within `body_timeout_s` of the end of the head: `408` when no
  answer has started (the application sees the client as gone), else the connection is closed.
  The time does not run out while the server itself holds the body back (uvicorn pauses reading
  while a pipelined request waits its turn, or while the application has not read what came).
- **keep-alive** — uvicorn's own `timeout_keep_alive`: an idle connection between requests is closed.

These answers are written by the protocol (the application never sees such a request): the usual
JSON error body with `Connection: close`, counted in `fatigue_ingest_requests_refused_total`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ingest.errors import error_body
from services.metrics import IngestMetrics
from services.settings import IngestSettings

log = logging.getLogger(__name__)

HEADER_TOO_LARGE = "header_too_large"
HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
"""Reasons of `fatigue_ingest_requests_refused_total` for what the protocol refuses."""
FIELD_OVERHEAD_BYTES = 4
"""`: ` and CRLF around each header field, counted with its name and value."""
LINGER_S = 2.0
"""After a refusal, how long what the client still sends is read and dropped before the connection
is closed (a staged close, RFC 9112 §9.6): closing at once while it still sends would reset the
connection and lose the answer it has not read yet."""


def _not_counted(reason: str) -> None:
    return None


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may send, and how slowly (see the module docstring)."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    on_refused: Callable[[str], None] = _not_counted
    """Called with the reason of each refusal (a metric)."""

    @classmethod
    def of(cls, settings: IngestSettings, on_refused: Callable[[str], None] = _not_counted) -> HttpLimits:
        return cls(max_header_bytes=settings.http_max_header_bytes, max_headers=settings.http_max_headers,
                   header_timeout_s=settings.http_header_timeout_s, body_timeout_s=settings.http_body_timeout_s,
                   on_refused=on_refused)


class HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is over a limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `limits` (a subclass per server: `bounded_protocol`)."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        """A request head has begun and is not complete."""
        self._in_body = False
        """A request head is complete and its body is not."""
        self._head_bytes = 0
        """Bytes of that head received so far (the estimate that bounds memory)."""
        self._head_undercounted = False
        """A pipelined head began in a read after the end of another request: not all counted."""
        self._feed_bytes = 0
        self._began_in_feed = False
        self._ended_in_feed = False
        self._refusal: tuple[int, str, str] | None = None
        self._lingering = False
        """Refused and answered: what still arrives is dropped until the connection is closed."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # ---- connection ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse what arrived, then bound what is still incomplete. The timers are armed only for a
        request still incomplete after a read (the usual request arrives whole in one read: none)."""
        if self._lingering:
            return
        self._began_in_feed = self._ended_in_feed = False
        self._feed_bytes = len(data)
        super().data_received(data)
        if self._closing():
            return
        if self._in_head:
            self._count_head_bytes(len(data))
            if self._head_timer is None and not self._closing():
                self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def _closing(self) -> bool:
        return self._lingering or self.transport.is_closing()

    def _count_head_bytes(self, size: int) -> None:
        """Count what arrived of a head still incomplete after this read: all of it when the head
        began before it, or began at its start; nothing when a pipelined request ended in it first
        (its head is then counted from the next read on, and exactly once complete)."""
        if not self._began_in_feed:
            self._head_bytes += size
        elif self._ended_in_feed:
            self._head_bytes, self._head_undercounted = 0, True
        else:
            self._head_bytes = size
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, HEADER_TOO_LARGE, self._head_size_message())

    # ---- parser callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_in_feed = True
        self._head_bytes = 0
        self._head_undercounted = False

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._check_complete_head()
        super().on_headers_complete()

    def _check_complete_head(self) -> None:
        """The exact bounds of a complete head (one that came whole in a read escaped the count of
        `_count_head_bytes`); its size is added up only when what arrived could exceed the limit."""
        if len(self.headers) > self.limits.max_headers:
            self._stop_head(f"the request has more than {self.limits.max_headers} header fields "
                            "(FATIGUE_HTTP_MAX_HEADERS)")
        at_most = self._feed_bytes if self._began_in_feed else self._head_bytes + self._feed_bytes
        if at_most <= self.limits.max_header_bytes and not self._head_undercounted:
            return
        size = len(self.url) + sum(len(name) + len(value) + FIELD_OVERHEAD_BYTES for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._stop_head(self._head_size_message())

    def _stop_head(self, message: str) -> None:
        """Stop the parser (uvicorn then calls `send_400_response`, answered 431 instead)."""
        self._refusal = (431, HEADER_TOO_LARGE, message)
        raise HeadRefused(message)

    def on_message_complete(self) -> None:
        self._ended_in_feed = True
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; a head stopped by `_stop_head` is answered 431 instead."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, code, message = self._refusal
        self._refuse(status, code, message)

    # ---- timers ----

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closing():
            return
        if self._earlier_request_unanswered():  # a pipelined head waits for the answer before it: wait on
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
            return
        if not self._in_head:  # nothing of a request arrived: close without an answer
            self.limits.on_refused(HEADER_TIMEOUT)
            self.transport.close()
            return
        self._refuse(408, "request_timeout", f"the request head did not arrive within "
                     f"{self.limits.header_timeout_s:g}s (FATIGUE_HTTP_HEADER_TIMEOUT_S)", reason=HEADER_TIMEOUT)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._closing():
            return
        if self.pipeline or self.flow.read_paused:  # we hold the body back, not the client: wait on
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)
            return
        message = (f"the request body did not arrive within {self.limits.body_timeout_s:g}s of its head "
                   "(FATIGUE_HTTP_BODY_TIMEOUT_S)")
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application's receive() now answers http.disconnect, its send() nothing
            cycle.message_event.set()
            self._refuse(408, "request_timeout", message, reason=BODY_TIMEOUT)
            return
        self.limits.on_refused(BODY_TIMEOUT)
        log.info("closing %s: %s", self._peer(), message)
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            self._cancel(timer)
        self._head_timer = self._body_timer = self._linger_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    # ---- answers ----

    def _earlier_request_unanswered(self) -> bool:
        """A request before the one being read is still being answered on this connection."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.disconnected

    def _refuse(self, status: int, code: str, message: str, *, reason: str = HEADER_TOO_LARGE) -> None:
        """Answer `status` with the API's error body, then close the connection (staged: `LINGER_S`);
        only close it when an earlier request's answer is still being written (pipelining)."""
        self.limits.on_refused(reason)
        log.info("%d to %s: %s", status, self._peer(), message)
        if self._earlier_request_unanswered():
            self.transport.close()
            return
        body = json.dumps(error_body(code, message)).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self._cancel_timers()
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _head_size_message(self) -> str:
        return (f"the request line and header fields are larger than {self.limits.max_header_bytes} bytes "
                "(FATIGUE_HTTP_MAX_HEADER_BYTES)")

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def server_config(app: FastAPI, settings: IngestSettings, **options: Any) -> uvicorn.Config:
    """How `fatigue api` serves `app` (tests pass `port=` and the like in `options`).

    uvloop and httptools (pinned dependencies): libuv's event loop and llhttp's parser, not asyncio's
    loop and h11 — a large share of a small request's CPU (docs/performance.md). No WebSocket: the API
    has none, and an upgrade request is answered as a plain request."""
    metrics: IngestMetrics = app.state.metrics
    limits = HttpLimits.of(settings, lambda reason: metrics.requests_refused.labels(reason=reason).inc())
    chosen: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_config": None, "access_log": False, "loop": "uvloop",
        "http": bounded_protocol(limits), "ws": "none", "timeout_keep_alive": settings.http_keepalive_timeout_s,
    }
    return uvicorn.Config(app, **(chosen | options))
