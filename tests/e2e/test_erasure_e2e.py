"""Erasure is complete (issue 17, finding 9): a customer known to every store — an unmapped provider
event of an address its profile lists later, identities, events scored by a real scorer, an action
delivered by a real notifier — is erased with DELETE /v1/customers/{id}; then a scan of every key and
value under the Redis prefix finds none of its identifiers except in the stores `remains` names.
Another customer's data stays."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import Redis

from ingest.identity import EMAIL, PHONE, Identity, IdentityMap
from services.settings import CommonSettings
from services.stored_values import StoredValueUnreadable, json_text
from tests.helpers import FAST_GROUP_ENV, over_contacted, service_process, wait_until
from tests.ingest.adapters.samples import load_json
from tests.ingest.helpers import ingest_settings_for, running_api
from tests.notifier.receivers import serving_on_loopback

pytestmark = pytest.mark.integration

VICTIM = "victim-e2e"
BYSTANDER = "bystander-e2e"
LATER_LISTED = "victim.second@example.com"
HASH_KEY = "identity-hash-key-for-the-test"
REMAINS_BY_KEY = {"dedup:": "de-duplication marks", "delivery:": "webhook delivery records"}
"""Stores that keep what `remains` says they keep (the event ids the test's producer chose embed the
customer id; delivery records hold the action), keyed by their Redis key prefix."""


async def every_value(redis: Redis, prefix: str) -> dict[str, str]:
    """key -> everything stored under it, as text (compressed stored values decompressed)."""
    readers: dict[str, Callable[[str], Awaitable[Any]]] = {
        "string": redis.get, "hash": redis.hgetall, "set": redis.smembers, "list": lambda k: redis.lrange(k, 0, -1),
        "zset": lambda k: redis.zrange(k, 0, -1, withscores=True), "stream": redis.xrange,
    }
    found = {}
    async for key in redis.scan_iter(match=f"{prefix}*", count=500):
        kind = await redis.type(key)
        if kind == "none":  # expired or deleted since the scan saw it
            continue
        value = await readers[kind](key)
        if isinstance(value, str):
            try:
                value = json_text(value).decode()
            except StoredValueUnreadable:
                pass
        found[key] = repr(value)
    return found


def identifiers(identities: IdentityMap) -> list[str]:
    """Everything that identifies the victim: its id, its addresses as sent and normalised, their digests."""
    addresses = [Identity(EMAIL, "victim@example.com"), Identity(EMAIL, LATER_LISTED), Identity(PHONE, "+15558675309")]
    return [VICTIM, "Victim@Example.com", "5558675309", *(a.value for a in addresses),
            *(identities.digest(a) for a in addresses)]


def offenders(values: dict[str, str], prefix: str, names: list[str]) -> dict[str, list[str]]:
    """key -> the identifiers found in its name or value, outside the stores `remains` names."""
    kept = tuple(prefix + p for p in REMAINS_BY_KEY)
    found = {key: [n for n in names if n.lower() in (key + value).lower()] for key, value in values.items()
             if not key.startswith(kept)}
    return {key: hits for key, hits in found.items() if hits}


def sendgrid_open(email: str, event_id: str) -> dict[str, Any]:
    return dict(load_json("sendgrid_events.json")[3], email=email, sg_event_id=event_id)


@pytest.mark.timeout(300)
async def test_after_erasure_no_store_holds_the_customer_but_those_remains_names(
    common_settings: CommonSettings, infra_env: dict[str, str], unique: str, tmp_path: Path, redis_client: Redis
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True,
                                   identity_hash_key=SecretStr(HASH_KEY))
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}", "FATIGUE_METRICS_PORT": "0",
           "FATIGUE_ALLOW_LOOPBACK_DESTINATIONS": "true", "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    prefix = common_settings.redis_prefix
    async with serving_on_loopback(hook) as hook_url, running_api(settings) as api:
        assert (await api.post("/v1/subscriptions", json={"url": hook_url})).status_code == 201
        unmapped = [sendgrid_open(LATER_LISTED, "sg-victim"), sendgrid_open("bystander@example.com", "sg-other")]
        assert (await api.post("/v1/adapters/sendgrid", json=unmapped)).json()["unmapped"] == 2
        for customer, emails in ((VICTIM, ["Victim@Example.com", LATER_LISTED]), (BYSTANDER, ["by@example.com"])):
            profile = {"stage": "prospect", "owner_rep_id": "rep-1", "emails": emails,
                       **({"phones": ["+1 555 867 5309"]} if customer == VICTIM else {})}
            assert (await api.put(f"/v1/customers/{customer}/profile", json=profile)).status_code == 202
            assert (await api.post("/v1/events", json=over_contacted(customer))).status_code == 202
        with service_process("scorer", env, tmp_path), service_process("notifier", env, tmp_path):
            async def delivered() -> bool:
                return {d["data"]["customer_id"] for d in received} >= {VICTIM, BYSTANDER}

            await wait_until(delivered, 90, "a webhook about each customer")
            names = identifiers(IdentityMap(redis_client, settings.keys, HASH_KEY.encode()))
            before = offenders(await every_value(redis_client, prefix), prefix, names)
            assert len(before) >= 5, f"the victim is not in enough stores to test anything: {sorted(before)}"

            erased = await api.delete(f"/v1/customers/{VICTIM}")
            assert erased.status_code == 200, erased.text
            remains = " ".join(erased.json()["remains"])
            assert all(store in remains for store in REMAINS_BY_KEY.values()), remains

            deadline = time.monotonic() + 60  # the scorer reads the tombstone and drops its timer and cache too
            while (left := offenders(await every_value(redis_client, prefix), prefix, names)) and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert not left, f"identifiers of the erased customer outside what `remains` names: {left}"
            assert (await api.get(f"/v1/customers/{BYSTANDER}")).status_code == 200
            left = (await api.get("/v1/adapters/rejected")).json()["items"]
            assert [entry["recipient"] for entry in left] == ["bystander@example.com"]
