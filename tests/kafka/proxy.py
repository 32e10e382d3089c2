"""A loopback TCP proxy in front of one Apache Kafka broker that can lose produce responses.

A real network fault, not a fake broker: every byte goes to the real broker and back. The proxy reads
the Kafka protocol's framing (a 4-byte size, then for a request `api_key`, `api_version`,
`correlation_id`; for a response `correlation_id` — the Kafka protocol guide, "Requests and
Responses") to know which responses answer Produce requests (api_key 0). Armed with
`lose_produce_responses(n)`, it closes the client's connection instead of passing on the next `n` of
them: the broker has written (and, with acks=all, replicated) the records, the producer never hears
so, and retries them on a new connection — the case the idempotent producer exists for.

The broker must advertise the proxy's port (`advertised.listeners`), so that clients reach it
through the proxy after the bootstrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from fatigue.embedded import LOOPBACK

PRODUCE = 0


class LosingProxy:
    def __init__(self, listen_port: int, broker_port: int) -> None:
        self.listen_port = listen_port
        self.broker_port = broker_port
        self.lost = 0
        """Produce responses not passed on so far."""
        self._to_lose = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def lose_produce_responses(self, count: int) -> None:
        self._to_lose = count

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.listen_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(LOOPBACK, self.broker_port)
        except OSError:
            client_w.close()
            return
        produce_ids: set[int] = set()
        up = asyncio.ensure_future(self._requests(client_r, broker_w, produce_ids))
        down = asyncio.ensure_future(self._responses(broker_r, client_w, produce_ids))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            await asyncio.gather(up, down, return_exceptions=True)
            for writer in (client_w, broker_w):
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        produce_ids: set[int]) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await _frame(reader)
                api_key, _version, correlation_id = struct.unpack(">hhi", frame[4:12])
                if api_key == PRODUCE:
                    produce_ids.add(correlation_id)
                writer.write(frame)
                await writer.drain()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         produce_ids: set[int]) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await _frame(reader)
                (correlation_id,) = struct.unpack(">i", frame[4:8])
                if correlation_id in produce_ids and self._to_lose > 0:
                    self._to_lose -= 1
                    self.lost += 1
                    return  # the connection closes with the response unsent
                produce_ids.discard(correlation_id)
                writer.write(frame)
                await writer.drain()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    """One size-prefixed Kafka frame, the size included."""
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    return head + await reader.readexactly(size)
