"""Scripted webhook receivers on loopback for notifier scenario tests.

A `Receiver` answers each request with what its `respond(n)` says for the n-th request it got
(0-based): a status, headers, and optionally a delay before answering. Every request is recorded
as a `Hit` with its `webhook-id`, the action it carried, whether its Standard Webhooks signature
verified, when it arrived, and the status the sender actually got — None when the sender hung up
before the answer (a timed-out attempt), so `successes()` counts only answers that reached it.

A receiver can be created down (`start=False`): its port is reserved by number but nothing
listens, so connections are refused until `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fatigue.embedded import free_port


@contextlib.asynccontextmanager
async def serving_on_loopback(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A real HTTP server on a free loopback port answering POST /hook with `handle`; yields the URL.
    The socket is bound before the server starts, so no other process can take the port between."""
    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        await runner.cleanup()
        sock.close()


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Hit:
    webhook_id: str
    action_id: str | None
    verified: bool
    arrived_s: float
    """time.monotonic() when the request came in."""
    status: int | None = None
    """What the sender got back; None while answering or when it hung up before the answer."""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Respond = Callable[[int], Reply]


def signature_verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the Standard Webhooks reference library accepts the request."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def always(status: int, **headers: str) -> Respond:
    return lambda _n: Reply(status, headers)


@dataclass
class Receiver:
    respond: Respond
    port: int
    secret: str = ""
    hits: list[Hit] = field(default_factory=list)
    _requests: int = 0
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def up(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def close(self) -> None:
        self._closing.set()  # ends the delays of slow answers still in progress
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def by_webhook_id(self) -> dict[str, list[Hit]]:
        grouped: dict[str, list[Hit]] = defaultdict(list)
        for hit in self.hits:
            grouped[hit.webhook_id].append(hit)
        return grouped

    def successes(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.succeeded]

    async def _handle(self, request: web.Request) -> web.Response:
        reply = self.respond(self._requests)  # numbered before any await: concurrent requests differ
        self._requests += 1
        body = await request.read()
        headers = dict(request.headers)
        verified = signature_verifies(self.secret, body, headers)
        try:
            action_id = json.loads(body)["data"]["action_id"]
        except (ValueError, KeyError, TypeError):
            action_id = None
        hit = Hit(headers.get("webhook-id", ""), action_id, verified, time.monotonic())
        self.hits.append(hit)
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=reply.status)  # the sender hung up: nobody gets this answer
        hit.status = reply.status
        return web.Response(status=reply.status, headers=reply.headers)


@contextlib.asynccontextmanager
async def receiving(respond: Respond, *, start: bool = True) -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port; `start=False`: the port refuses connections until `start()`."""
    rec = Receiver(respond, free_port())
    try:
        if start:
            await rec.start()
        yield rec
    finally:
        await rec.close()
