"""`fatigue demo`: feed the synthetic stream through the real API and show the alerts arriving.

A webhook sink on a loopback port is subscribed through the API; every delivery it receives is
verified with the subscription's secret (Standard Webhooks) and printed as a rep would see it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from fatigue.demo_data import generate
from fatigue.embedded import free_port
from fatigue.supervisor import Plan, say

BATCH = 500


class Sink:
    """A tiny ASGI app that verifies and prints webhook deliveries."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = 204 if self._show(body, headers) else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _show(self, body: bytes, headers: dict[str, str]) -> bool:
        from notifier.signing import verify

        ok = verify(self.secret, headers.get("webhook-id", ""), int(headers.get("webhook-timestamp", "0")), body,
                    headers.get("webhook-signature", ""), now_s=int(datetime.now(UTC).timestamp()))
        payload = json.loads(body)
        data = payload["data"]
        self.received[payload["type"]] += 1
        rep = data.get("owner_rep_id") or "no owner"
        mark = "signature ok" if ok else "BAD SIGNATURE"
        say(f"   alert | {payload['type']:<18} {data['customer_id']} (rep {rep}): {data['suggestion']} [{mark}]")
        return ok


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the API did not become ready within {timeout_s:.0f}s")


def _first_secret(configured: str) -> str:
    """The secret of the first FATIGUE_API_KEYS entry (name:secret[:scopes[:rate]], or a bare secret);
    the demo needs the ingest and admin scopes on it."""
    parts = configured.split(",")[0].strip().split(":")
    return parts[1] if len(parts) > 1 else parts[0]


async def run_demo(plan: Plan, customers: int, seed: int) -> None:
    key = plan.api_key or _first_secret(plan.env["FATIGUE_API_KEYS"])
    sink = Sink()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(sink, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=30) as client:
            await _wait_ready(client)
            sub = (await client.post("/v1/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"})).json()
            sink.secret = sub["secret"]
            say(f"    demo | webhook sink on http://127.0.0.1:{port}/hook subscribed as {sub['id']}")
            people, events = generate(customers, seed, datetime.now(UTC))
            await _put_profiles(client, people)
            await _post_events(client, events)
            say(f"    demo | posted {len(people)} profiles and {len(events)} events; alerts follow as they fire")
            example = f"{plan.api_url}/v1/customers/{people[0].customer_id}"
            say(f"    demo | try: curl -H 'Authorization: Bearer {key}' {example}")
        await serving
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)


async def _put_profiles(client: httpx.AsyncClient, people: list[Any]) -> None:
    semaphore = asyncio.Semaphore(16)

    async def put(person: Any) -> None:
        async with semaphore:
            response = await client.put(f"/v1/customers/{person.customer_id}/profile", json=person.profile)
            response.raise_for_status()

    await asyncio.gather(*(put(p) for p in people))


def _batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Requests of up to BATCH events that never split one customer's history: as a CRM export
    would send it, and so the scorer never sees half a history (which could look neglected)."""
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for body in events:
        by_customer.setdefault(body["customer_id"], []).append(body)
    batches: list[list[dict[str, Any]]] = [[]]
    for history in by_customer.values():
        if len(batches[-1]) + len(history) > BATCH:
            batches.append([])
        batches[-1].extend(history)
    return [b for b in batches if b]


async def _post_events(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for batch in _batches(events):
        response = await client.post("/v1/events", json=batch)
        response.raise_for_status()
        rejected = response.json().get("rejected")
        if rejected:
            say(f"    demo | {len(rejected)} events rejected: {rejected[:3]}")
