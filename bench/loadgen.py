"""An HTTP/1.1 load generator (closed and open loop) and a stub server to measure its own ceiling.

    python -m bench.loadgen run --port P --spec JSON --mode closed|open [--rate R] --duration S --out FILE
    python -m bench.loadgen stub --port P

Runs as its own process (its CPU is not the API's, and is reported). Plain asyncio protocols on
keep-alive connections, one request in flight per connection:

- closed loop: `concurrency` connections each send the next request as soon as the last answer
  arrived, for `duration` seconds: the maximum rate the server sustains with that many clients.
- open loop: request i is due at start + i / rate whatever happened before (no coordinated
  omission): a due request goes out on a free connection (up to `concurrency`) or waits for one,
  and its latency is counted from when it was *due*. Requests still unanswered `drain` seconds
  after the last one was due count with the time they had waited then (a lower bound).

The stub answers every request at once with a fixed small JSON body: the generator's rate
against it (closed loop) is the generator's own ceiling on this machine.

Specs (what each request is): `{"kind": "decision", "key": K, "customers": N}` GETs
/v1/customers/c{i % N}/decision?channel=…&kind=promo; `{"kind": "events", "key": K, "batch": B,
"id_prefix": P, "customers": N}` POSTs B new events (unique ids) to /v1/events; `{"kind": "get",
"path": "/"}` for the stub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CHANNELS = (b"email", b"sms", b"phone", b"wecom")


def request_maker(spec: dict[str, Any], host: str) -> Callable[[int], bytes]:
    kind = spec["kind"]
    head = f"Host: {host}\r\n".encode()
    if "key" in spec:
        head += f"Authorization: Bearer {spec['key']}\r\n".encode()
    if kind == "get":
        line = f"GET {spec.get('path', '/')} HTTP/1.1\r\n".encode() + head + b"\r\n"
        return lambda i: line
    if kind == "decision":
        customers = int(spec["customers"])
        prefix = spec.get("customer_prefix", "c").encode()

        def decision(i: int) -> bytes:
            cid = prefix + str(i % customers).encode()
            return (b"GET /v1/customers/" + cid + b"/decision?channel=" + CHANNELS[i % 4] + b"&kind=promo HTTP/1.1\r\n"
                    + head + b"\r\n")

        return decision
    if kind == "events":
        return _events_maker(spec, head)
    raise ValueError(f"unknown request kind {kind!r}")


def _events_maker(spec: dict[str, Any], head: bytes) -> Callable[[int], bytes]:
    batch = int(spec.get("batch", 1))
    customers = int(spec.get("customers", 10_000))
    id_prefix = spec.get("id_prefix", "lg")
    occurred = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    template = ('{"event_id":"%s-%d","type":"touch","customer_id":"%s%d","channel":"email","kind":"promo",'
                '"occurred_at":"' + occurred + '"}')
    customer_prefix = spec.get("customer_prefix", "lg")

    def events(i: int) -> bytes:
        first = i * batch
        items = [template % (id_prefix, n, customer_prefix, n % customers) for n in range(first, first + batch)]
        body = (items[0] if batch == 1 else "[" + ",".join(items) + "]").encode()
        return (b"POST /v1/events HTTP/1.1\r\n" + head + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    return events


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection with one request in flight; `request` returns (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        if self.closed:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def connect(host: str, port: int) -> ClientConnection:
    _, protocol = await asyncio.get_running_loop().create_connection(ClientConnection, host, port)
    return protocol


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.answered = 0
        self.last_answer = 0.0
        self.sample_bodies: dict[int, str] = {}

    def record(self, status: int, body: bytes, latency_s: float) -> None:
        self.answered += 1
        self.last_answer = time.monotonic()
        self.latencies.append(latency_s)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status not in self.sample_bodies:
            self.sample_bodies[status] = body[:300].decode(errors="replace")

    def summary(self, elapsed_s: float, offered: float | None, unanswered: int) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float:
            return lat[max(0, math.ceil(p * len(lat)) - 1)] * 1000 if lat else float("nan")

        return {"count": self.answered, "errors": self.errors, "unanswered": unanswered, "elapsed_s": elapsed_s,
                "rate": self.answered / elapsed_s if elapsed_s else 0.0, "offered": offered,
                "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": q(1.0),
                "statuses": {str(k): v for k, v in self.statuses.items()}, "sample_bodies": self.sample_bodies}


async def closed_loop(host: str, port: int, make: Callable[[int], bytes], concurrency: int,
                      duration_s: float) -> dict[str, Any]:
    conns = [await connect(host, port) for _ in range(concurrency)]
    tally = Tally()
    counter = iter(range(1 << 62))
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration_s

    async def worker(conn: ClientConnection) -> None:
        while loop.time() < deadline:
            raw = make(next(counter))
            sent = loop.time()
            try:
                status, body = await conn.request(raw)
            except ConnectionError:
                tally.errors += 1
                conn = await connect(host, port)
                continue
            tally.record(status, body, loop.time() - sent)

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = loop.time() - started
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return tally.summary(elapsed, None, 0)


class OpenLoop:
    """Requests due at a fixed rate, sent on free connections; latency counted from when each was due."""

    def __init__(self, host: str, port: int, make: Callable[[int], bytes], rate: float) -> None:
        self.host, self.port, self.make, self.rate = host, port, make, rate
        self.loop = asyncio.get_running_loop()
        self.free: asyncio.Queue[ClientConnection] = asyncio.Queue()
        self.tally = Tally()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.due_at: dict[int, float] = {}
        self.stopping = asyncio.Event()
        self.started = 0.0

    async def one(self, i: int, due: float) -> None:
        conn = await self.free.get()
        try:
            status, body = await conn.request(self.make(i))
            self.tally.record(status, body, self.loop.time() - due)
        except ConnectionError:
            self.tally.errors += 1
            conn = await connect(self.host, self.port)
        finally:
            self.due_at.pop(i, None)
            self.free.put_nowait(conn)

    async def schedule(self, total: int) -> int:
        """Start request i at its due time until `total` were started or SIGTERM came; how many started."""
        self.started = self.loop.time() + 0.05
        i = 0
        while i < total and not self.stopping.is_set():
            now = self.loop.time()
            while i < total and self.started + i / self.rate <= now:
                due = self.started + i / self.rate
                self.due_at[i] = due
                task = self.loop.create_task(self.one(i, due))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, self.started + i / self.rate - self.loop.time()))
        return i

    async def drain(self, sent: int, drain_s: float) -> int:
        """Wait up to `drain_s` after the last due time; the unanswered count with what they waited so far."""
        last_due = self.started + (sent - 1) / self.rate if sent else self.started
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=max(0.1, last_due + drain_s - self.loop.time()))
        now = self.loop.time()
        unanswered = len(self.due_at)
        self.tally.latencies.extend(now - due for due in self.due_at.values())  # a lower bound
        for task in list(self.in_flight):
            task.cancel()
        return unanswered


async def open_loop(host: str, port: int, make: Callable[[int], bytes], rate: float, duration_s: float,
                    concurrency: int, drain_s: float) -> dict[str, Any]:
    run = OpenLoop(host, port, make, rate)
    for _ in range(concurrency):
        run.free.put_nowait(await connect(host, port))
    run.loop.add_signal_handler(signal.SIGTERM, run.stopping.set)  # stop early, still report
    began = time.monotonic()
    sent = await run.schedule(int(rate * duration_s))
    unanswered = await run.drain(sent, min(drain_s, 1.0) if run.stopping.is_set() else drain_s)
    elapsed = max(sent / rate, run.tally.last_answer - began)  # answers per second, backlog included
    return run.tally.summary(elapsed, rate, unanswered)


class StubServer(asyncio.Protocol):
    RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n"
                b'{"decision":"x"}')

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[:end + 4 + length]
            self.transport.write(self.RESPONSE)


async def serve_stub(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(StubServer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("run", "stub"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", default='{"kind": "get"}')
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "stub":
        asyncio.run(serve_stub(args.port))
        return
    make = request_maker(json.loads(args.spec), f"{args.host}:{args.port}")
    cpu = time.process_time()
    if args.mode == "closed":
        result = asyncio.run(closed_loop(args.host, args.port, make, args.concurrency, args.duration))
    else:
        result = asyncio.run(open_loop(args.host, args.port, make, args.rate, args.duration, args.concurrency,
                                       args.drain))
    result["generator_cpu_s"] = time.process_time() - cpu
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text)
    else:
        os.write(1, text.encode() + b"\n")


if __name__ == "__main__":
    main()
