"""No secret in the notifier's logs: a real `fatigue notifier` process delivers to chat-format URLs
that carry known secrets (path tokens, `key=`, `access_token=`, signing secrets), at DEBUG so the
HTTP client logs every request URL, with a first attempt that fails so the retry path logs too.
Every line it wrote must be JSON, and none may hold any of the secrets or the signatures it sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from redis.asyncio import Redis

from fatigue.embedded import free_port
from services.actions import Action, encode_action
from services.delivery.subscriptions import SubscriptionStore
from services.kafka import make_producer
from services.names import ACTION_THROTTLE
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, service_process, wait_until
from tests.notifier.helpers import make_action

pytestmark = pytest.mark.integration

SLACK_TOKEN = "Qm7vX2kR9pL4tN8wZ3yB6cDs"
WECOM_KEY = "5c0f9e1a-7d2b-4c3e-9f80-1a2b3c4d5e6f"
DINGTALK_TOKEN = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
DINGTALK_SECRET = "SEC" + "4f" * 32
FEISHU_TOKEN = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
FEISHU_SECRET = "qWeRtYuIoPaSdFgHjKlZxC"
TEAMS_TOKEN = "3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f"
STANDARD_TOKEN = "tok_8Hf3Kq9Lm2Np7Rs4Tv6Wx"


class ChatReceiver:
    """Any POST path; the first request to each path gets 503, later ones 200 with a provider-style body."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str], bytes]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        first = all(path.split("?")[0] != request.path for path, _, _ in self.hits)
        self.hits.append((request.path_qs, dict(request.headers), body))
        if first:
            return web.Response(status=503)
        return web.json_response({"errcode": 0, "code": 0, "ok": True})


@pytest.fixture
async def chat_receiver() -> AsyncIterator[ChatReceiver]:
    rec = ChatReceiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


async def test_a_real_notifier_run_logs_no_secret(
    common_settings: CommonSettings, infra_env: dict[str, str], redis_client: Redis, unique: str,
    chat_receiver: ChatReceiver, tmp_path: Path,
) -> None:
    base = f"http://127.0.0.1:{chat_receiver.port}"
    subscriptions = SubscriptionStore(redis_client, common_settings.keys)
    targets = [
        (f"{base}/services/T0SECRET1/B0SECRET2/{SLACK_TOKEN}", "slack", None),
        (f"{base}/cgi-bin/webhook/send?key={WECOM_KEY}", "wecom", None),
        (f"{base}/robot/send?access_token={DINGTALK_TOKEN}", "dingtalk", DINGTALK_SECRET),
        (f"{base}/open-apis/bot/v2/hook/{FEISHU_TOKEN}", "feishu", FEISHU_SECRET),
        (f"{base}/webhookb2/{FEISHU_TOKEN}@{WECOM_KEY}/IncomingWebhook/{TEAMS_TOKEN}/{FEISHU_TOKEN}", "teams", None),
        (f"{base}/hook?token={STANDARD_TOKEN}", "standard", None),
    ]
    created = [await subscriptions.create(url, [ACTION_THROTTLE], format=fmt, secret=secret)
               for url, fmt, secret in targets]
    env = {
        **infra_env, **FAST_GROUP_ENV,
        "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
        "FATIGUE_ALLOW_LOOPBACK_DESTINATIONS": "true",
        "FATIGUE_RETRY_SCHEDULE_S": "0,0.3,0.3",
        "FATIGUE_LOG_LEVEL": "DEBUG",
        "FATIGUE_LOG_FORMAT": "json",
        "FATIGUE_METRICS_PORT": str(free_port()),
    }
    with service_process("notifier", env, tmp_path) as proc:
        await publish(common_settings, make_action())

        async def all_delivered() -> bool:
            assert proc.poll() is None, "the notifier exited"
            return len(chat_receiver.hits) >= 2 * len(targets)

        await wait_until(all_delivered, 60, "a failed and a successful attempt per subscription")
        time.sleep(0.5)  # the delivered bookkeeping is logged after the answer
    (log_path,) = tmp_path.glob("notifier-*.log")
    output = log_path.read_text()
    records = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object

    secrets = [SLACK_TOKEN, WECOM_KEY, DINGTALK_TOKEN, DINGTALK_SECRET, FEISHU_TOKEN, FEISHU_SECRET, TEAMS_TOKEN,
               STANDARD_TOKEN, "T0SECRET1", "B0SECRET2", *(sub.secret for sub in created)]
    secrets += _sent_signatures(chat_receiver)
    leaked = [secret for secret in secrets if secret in output]
    assert not leaked, f"in {log_path}: {leaked}"
    assert {r["service"] for r in records} == {"notifier"}
    requests_logged = [r for r in records if r["logger"] == "httpx" and "127.0.0.1" in str(r["message"])]
    assert len(requests_logged) >= 2 * len(targets), "the HTTP client did not log its requests: nothing was tested"
    assert all(r.get("action_id") and r.get("delivery_id") for r in requests_logged), "a delivery's lines name it"
    assert any(r["level"] == "INFO" and "failed" in str(r["message"]) for r in records), "no retry was logged"


def _sent_signatures(rec: ChatReceiver) -> list[str]:
    """What the notifier computed and sent: webhook-signature values, DingTalk's sign, Feishu's sign."""
    found: list[str] = []
    for path, headers, body in rec.hits:
        if "webhook-signature" in {k.lower() for k in headers}:
            value = next(v for k, v in headers.items() if k.lower() == "webhook-signature")
            found += [part.split(",", 1)[1] for part in value.split()]
        if "sign=" in path:
            found.append(path.split("sign=", 1)[1].split("&")[0])
        try:
            sign = json.loads(body).get("sign")
        except ValueError:
            sign = None
        if sign:
            found.append(sign)
    return found


async def publish(settings: CommonSettings, action: Action) -> None:
    producer = make_producer(settings, "redaction-test")
    await producer.start()
    try:
        await producer.send_and_wait(settings.actions_topic, encode_action(action), key=action["customer_id"].encode())
    finally:
        await producer.stop()
