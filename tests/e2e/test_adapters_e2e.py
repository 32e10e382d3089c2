"""End to end through the adapters: SendGrid `delivered` + `open` and a Twilio inbound "STOP" for
one customer (found through the identity map) -> Kafka -> a real scorer -> GET /v1/customers/{id}
and its decision: the touch, the open, email's quiet period for SMS, then SMS closed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from ingest.adapters.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, service_process, wait_until
from tests.ingest.adapters.samples import SendGridSigner, load_form, load_json, twilio_sign
from tests.ingest.helpers import ingest_settings_for, running_api

pytestmark = pytest.mark.integration

TWILIO_TOKEN = "twilio-auth-token-0123456789"
BASE = "https://fatigue.example.com"
CUSTOMER = "cust-e2e-adapters"


def sendgrid_events(now_s: int) -> bytes:
    sample = {e["event"]: e for e in load_json("sendgrid_events.json")}
    delivered = dict(sample["delivered"], email="Ana@Example.com", timestamp=now_s - 3600)
    opened = dict(sample["open"], email="ana@example.com", timestamp=now_s - 600)
    return json.dumps([delivered, opened]).encode()


async def snapshot_where(api: httpx.AsyncClient, check: Callable[[dict], bool], what: str) -> dict:
    async def ready() -> dict | None:
        response = await api.get(f"/v1/customers/{CUSTOMER}")
        body = response.json() if response.status_code == 200 else None
        return body if body and check(body) else None
    return await wait_until(ready, 60, what)


async def test_sendgrid_and_twilio_stop_reach_the_customer_state_and_the_decision(
    common_settings: CommonSettings, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    signer = SendGridSigner()
    settings = ingest_settings_for(common_settings, sendgrid_verification_key=signer.public_key_b64,
                                   twilio_auth_token=SecretStr(TWILIO_TOKEN), twilio_public_base_url=BASE)
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    async with running_api(settings) as api:
        put = await api.put(f"/v1/customers/{CUSTOMER}/profile",
                            json={"stage": "prospect", "emails": ["ana@example.com"], "phones": ["+15558675310"]})
        assert put.status_code == 202, put.text
        now_s = int(time.time())
        body = sendgrid_events(now_s)
        stamp = str(now_s)
        sent = await api.post("/v1/adapters/sendgrid", content=body, headers={
            TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signer.sign(stamp, body), "content-type": "application/json"})
        assert sent.json()["accepted"] == 2, sent.text
        with service_process("scorer", env, tmp_path):
            snap = await snapshot_where(api, lambda s: s["events_counted"] == 2, "the touch and the open counted")
            assert snap["windows"]["24h"]["touches"]["by_channel"] == {"email": 1}
            assert snap["windows"]["24h"]["responses"]["by_kind"] == {"open": 1}
            assert set(snap["last_response_by_channel"]["email"]) == {"open"}
            quiet = (await api.get(f"/v1/customers/{CUSTOMER}/decision", params={"channel": "sms"})).json()
            assert quiet["decision"] == "defer", quiet
            assert [(r["rule"], r["after"], r["on"]) for r in quiet["reasons"]] == [("quiet_period", "open", "email")]

            params = load_form("twilio_inbound_stop.txt")  # From +15558675310, Body STOP
            path = "/v1/adapters/twilio/inbound"
            stop = await api.post(path, content=urlencode(params), headers={
                "content-type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_sign(TWILIO_TOKEN, BASE + path, params)})
            assert stop.status_code == 200, stop.text

            snap = await snapshot_where(api, lambda s: "sms" in s["closed_channels"], "sms closed")
            assert snap["events_counted"] == 3 and list(snap["closed_channels"]) == ["sms"]
            closed = (await api.get(f"/v1/customers/{CUSTOMER}/decision", params={"channel": "sms"})).json()
            assert closed["decision"] == "deny"
            assert [r["rule"] for r in closed["reasons"]] == ["channel_closed"]
