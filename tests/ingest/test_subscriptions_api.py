"""Webhook subscriptions: create with options and destination checks, read without secrets, patch,
rotate the secret, send a test action, delete; digests, endpoint health, disabling and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.actions import decode_action
from services.delivery.health import CircuitConfig, EndpointHealthStore
from services.delivery.store import DeliveryRecord, DeliveryStore
from services.delivery.subscriptions import SubscriptionStore
from services.names import ACTION_TYPES, SECRET_PREFIX
from services.settings import CommonSettings, IngestSettings
from tests.ingest.helpers import consume, ingest_settings_for, running_api
from tests.notifier.helpers import make_action

pytestmark = pytest.mark.integration


async def test_crud(common_settings: CommonSettings, redis_client: Redis) -> None:
    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True)
    async with running_api(settings) as api:
        created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert created.status_code == 201, created.text
        sub = created.json()
        assert sub["id"].startswith("sub_") and sub["secret"].startswith(SECRET_PREFIX)
        assert sub["events"] == list(ACTION_TYPES) and sub["url"] == "http://127.0.0.1:9/hook"
        assert created.headers["Location"] == f"/v1/subscriptions/{sub['id']}"
        second = await api.post(
            "/v1/subscriptions",
            json={"url": "http://localhost:9/other", "events": ["fatigue.throttle", "fatigue.throttle"]},
        )
        assert second.json()["events"] == ["fatigue.throttle"]

        listed = (await api.get("/v1/subscriptions")).json()
        assert [s["id"] for s in listed] == [sub["id"], second.json()["id"]]
        assert all("secret" not in s for s in listed)
        one = (await api.get(f"/v1/subscriptions/{sub['id']}")).json()
        assert one["url"] == sub["url"] and "secret" not in one

        stored = await SubscriptionStore(redis_client, settings.keys).get(sub["id"])
        assert stored is not None and stored.secret == sub["secret"]  # what the notifier will sign with

        assert (await api.delete(f"/v1/subscriptions/{sub['id']}")).status_code == 204
        gone = await api.delete(f"/v1/subscriptions/{sub['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        assert (await api.get(f"/v1/subscriptions/{sub['id']}")).status_code == 404
        assert [s["id"] for s in (await api.get("/v1/subscriptions")).json()] == [second.json()["id"]]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:9/hook", "loopback address 127.0.0.1; loopback is not allowed"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private/internal address 10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data", "private/internal"),
        ("ftp://example.com/x", "scheme must be http or https"),
        ("https://user:pw@example.com/x", "must not carry credentials"),
        ("not-a-url", "scheme must be http or https"),
    ],
)
async def test_refused_destinations(
    common_settings: CommonSettings, redis_client: Redis, url: str, fragment: str
) -> None:
    settings = ingest_settings_for(common_settings)
    async with running_api(settings) as api:
        response = await api.post("/v1/subscriptions", json={"url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "destination_refused"
    assert fragment in response.json()["error"]["message"]
    assert await SubscriptionStore(redis_client, settings.keys).list() == []


async def test_create_with_format_filters_rate_limit_and_description(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True)
    body = {"url": "http://127.0.0.1:9/bot", "events": ["fatigue.throttle"], "format": "slack",
            "filters": {"tiers": ["A", "B"], "stages": ["negotiation"], "owner_rep_ids": ["alice"],
                        "customer_ids": ["acme-042"]},
            "rate_limit_per_minute": 30, "description": "Key accounts, sales channel"}
    async with running_api(settings) as api:
        created = await api.post("/v1/subscriptions", json=body)
        assert created.status_code == 201, created.text
        sub = created.json()
        assert {k: sub[k] for k in body} == body and sub["secret"].startswith(SECRET_PREFIX)
        assert sub["secret_rotation"] == {"previous_secrets": 0, "valid_until": None}
        one = await api.get(f"/v1/subscriptions/{sub['id']}")
        assert one.status_code == 200 and "secret" not in one.json()
        assert one.json() == {k: v for k, v in sub.items() if k != "secret"}
        feishu = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/f", "format": "feishu",
                                                            "secret": "feishu-bot-secret"})
        assert feishu.status_code == 201 and feishu.json()["secret"] == "feishu-bot-secret"
    stored = await SubscriptionStore(redis_client, settings.keys).get(sub["id"])
    assert stored is not None and stored.filters.tiers == ["A", "B"] and stored.rate_limit_per_minute == 30


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"format": "telegram"}, "format: 'telegram' is not one of standard, slack, teams, wecom, feishu, dingtalk"),
        ({"filters": {"tiers": ["Z"]}}, "filters.tiers[0]: 'Z' is not one of A, B, C"),
        ({"filters": {"stages": ["won"]}}, "filters.stages[0]: 'won' is not one of lead"),
        ({"filters": {"customer_ids": ["a b"]}}, "filters.customer_ids[0]: 'a b' may only contain"),
        ({"filters": {"regions": ["eu"]}}, "filters.regions: is not a known field"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute: must be greater than or equal to 1"),
        ({"description": "x" * 201}, "description: must have at most 200 characters"),
        ({"secret": "my-own-secret"}, "secret: may only be given for format feishu or dingtalk"),
    ],
)
async def test_invalid_options_name_the_field(
    common_settings: CommonSettings, redis_client: Redis, extra: dict[str, object], fragment: str
) -> None:
    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True)
    async with running_api(settings) as api:
        response = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook", **extra})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert fragment in response.json()["error"]["message"]
    assert await SubscriptionStore(redis_client, settings.keys).list() == []


async def test_patch_changes_given_fields_and_checks_the_new_destination(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    store = SubscriptionStore(redis_client, common_settings.keys)
    sub = await store.create("https://hooks.example.com/in", ["fatigue.throttle"], description="old")
    async with running_api(ingest_settings_for(common_settings)) as api:
        path = f"/v1/subscriptions/{sub.id}"
        patched = await api.patch(path, json={"events": ["fatigue.re_engage"], "filters": {"tiers": ["A"]},
                                              "format": "teams", "description": None})
        assert patched.status_code == 200, patched.text
        assert {k: patched.json()[k] for k in ("url", "events", "format", "description")} == {
            "url": sub.url, "events": ["fatigue.re_engage"], "format": "teams",
            "description": None}  # nothing in this URL looks like a token: shown as is
        stored = await store.get(sub.id)
        assert stored is not None and stored.url == sub.url
        assert patched.json()["filters"]["tiers"] == ["A"] and "secret" not in patched.json()
        refused = await api.patch(path, json={"url": "http://127.0.0.1:9/hook"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "destination_refused"
        assert "loopback" in refused.json()["error"]["message"]
        nulled = await api.patch(path, json={"events": None})
        assert nulled.status_code == 422 and "events: must not be null" in nulled.json()["error"]["message"]
        secret = await api.patch(path, json={"secret": "whsec_x"})
        assert secret.status_code == 422 and "secret: is not a known field" in secret.json()["error"]["message"]
        missing = await api.patch("/v1/subscriptions/sub_nope", json={"description": "x"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    stored = await store.get(sub.id)
    assert stored is not None and stored.url == sub.url and stored.secret == sub.secret
    assert stored.format == "teams" and stored.events == ["fatigue.re_engage"]
    async with running_api(ingest_settings_for(common_settings, allow_loopback_destinations=True)) as api:
        allowed = await api.patch(f"/v1/subscriptions/{sub.id}", json={"url": "http://127.0.0.1:9/hook"})
        assert allowed.status_code == 200 and allowed.json()["url"] == "http://127.0.0.1:9/hook"


async def test_rotate_secret_returns_a_new_one_and_the_list_shows_the_overlap(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    store = SubscriptionStore(redis_client, common_settings.keys)
    sub = await store.create("https://hooks.example.com/in", ["fatigue.throttle"])
    async with running_api(ingest_settings_for(common_settings)) as api:
        before = datetime.now(UTC)
        rotated = await api.post(f"/v1/subscriptions/{sub.id}/rotate-secret", json={"overlap_s": 3600})
        assert rotated.status_code == 200, rotated.text
        body = rotated.json()
        assert body["secret"].startswith(SECRET_PREFIX) and body["secret"] != sub.secret
        overlap_until = datetime.fromisoformat(body["overlap_until"])
        assert timedelta(seconds=3590) < overlap_until - before < timedelta(seconds=3610)
        [listed] = (await api.get("/v1/subscriptions")).json()
        assert listed["secret_rotation"] == {"previous_secrets": 1, "valid_until": body["overlap_until"]}
        assert "secret" not in listed
        default = await api.post(f"/v1/subscriptions/{sub.id}/rotate-secret")
        assert default.status_code == 200
        assert datetime.fromisoformat(default.json()["overlap_until"]) - before > timedelta(hours=23)
        assert default.json()["secret_rotation"]["previous_secrets"] == 2
        too_long = await api.post(f"/v1/subscriptions/{sub.id}/rotate-secret", json={"overlap_s": 8 * 86400})
        assert too_long.status_code == 422 and "overlap_s" in too_long.json()["error"]["message"]
        own = await api.post(f"/v1/subscriptions/{sub.id}/rotate-secret", json={"secret": "bot-secret-x"})
        assert own.status_code == 422 and "secret: may only be given" in own.json()["error"]["message"]
        assert (await api.post("/v1/subscriptions/sub_nope/rotate-secret")).status_code == 404
    stored = await store.get(sub.id)
    assert stored is not None and stored.signing_secrets(datetime.now(UTC)) == [
        default.json()["secret"], sub.secret, body["secret"]]


async def test_test_endpoint_puts_one_addressed_sample_action_on_the_actions_topic(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    sub = await SubscriptionStore(redis_client, common_settings.keys).create(
        "https://hooks.example.com/in", ["fatigue.throttle"])
    async with running_api(ingest_settings_for(common_settings)) as api:
        sent = await api.post(f"/v1/subscriptions/{sub.id}/test", json={"type": "fatigue.re_engage"})
        assert sent.status_code == 202, sent.text
        bad = await api.post(f"/v1/subscriptions/{sub.id}/test", json={"type": "fatigue.nope"})
        assert bad.status_code == 422 and "type: 'fatigue.nope' is not one of" in bad.json()["error"]["message"]
        assert (await api.post("/v1/subscriptions/sub_nope/test")).status_code == 404
    [record] = await consume(common_settings.kafka_bootstrap_servers, common_settings.actions_topic, expected=1)
    action = decode_action(record.value)
    assert record.key == b"sample-customer"
    assert action["action_id"] == sent.json()["action_id"] and action["type"] == "fatigue.re_engage"
    assert action.get("test") is True and action.get("subscription_id") == sub.id
    assert action["customer_id"] == "sample-customer" and action["reasons"][0]["observed"] > 0


async def test_test_endpoint_can_send_a_sample_digest(api: httpx.AsyncClient, settings: IngestSettings) -> None:
    sub = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", "format": "slack"})).json()
    sent = await api.post(f"/v1/subscriptions/{sub['id']}/test", json={"type": "fatigue.digest"})
    assert sent.status_code == 202, sent.text
    [record] = await consume(settings.kafka_bootstrap_servers, settings.actions_topic, expected=1)
    digest: dict[str, Any] = dict(decode_action(record.value))
    assert record.key == b"sample-rep" and digest["action_id"] == sent.json()["action_id"]
    assert (digest["type"], digest["test"], digest["subscription_id"]) == ("fatigue.digest", True, sub["id"])
    assert (digest["owner_rep_id"], digest["total"], digest["omitted"]) == ("sample-rep", 3, 0)
    assert digest["by_type"] == {"fatigue.throttle": 2, "fatigue.re_engage": 1}
    assert [item["customer_id"] for item in digest["items"]] == [
        "sample-customer-3", "sample-customer-2", "sample-customer-1"]  # oldest first
    assert digest["window_start"] < digest["window_end"] == digest["at"]


async def test_secrets_of_the_wrong_kind_are_refused(common_settings: CommonSettings) -> None:
    """A Feishu/DingTalk bot signs with its own secret, the other formats with a generated one."""
    settings = ingest_settings_for(common_settings, allow_loopback_destinations=True)
    async with running_api(settings) as api:
        slack = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/s", "format": "slack"})).json()
        bot = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/f", "format": "feishu",
                                                          "secret": "bot-secret"})).json()
        to_bot = await api.patch(f"/v1/subscriptions/{slack['id']}", json={"format": "dingtalk"})
        assert to_bot.status_code == 422 and "different kinds of signing secret" in to_bot.json()["error"]["message"]
        to_teams = await api.patch(f"/v1/subscriptions/{slack['id']}", json={"format": "teams"})
        assert to_teams.status_code == 200 and to_teams.json()["format"] == "teams"
        generated = await api.post(f"/v1/subscriptions/{bot['id']}/rotate-secret")
        assert generated.status_code == 422 and "own secret" in generated.json()["error"]["message"]
        given = await api.post(f"/v1/subscriptions/{bot['id']}/rotate-secret", json={"secret": "new-bot-secret"})
        assert given.status_code == 200 and given.json()["secret"] == "new-bot-secret"


@pytest.fixture
def settings(common_settings: CommonSettings) -> IngestSettings:
    """For the tests below through the `api` fixture: loopback receivers allowed."""
    return ingest_settings_for(common_settings, allow_loopback_destinations=True)


async def test_chat_formats_get_a_digest_limit_by_default_and_it_can_be_set_or_cleared(api: httpx.AsyncClient) -> None:
    async def created(**body: object) -> dict[str, object]:
        response = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", **body})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    assert (await created())["digest"] is None  # machines read standard: every alert on its own
    assert (await created(format="slack"))["digest"] == {"after": 5, "window_minutes": 10}
    assert (await created(format="slack", digest=None))["digest"] is None
    sub = await created(digest={"after": 3})
    assert sub["digest"] == {"after": 3, "window_minutes": 10}
    patched = await api.patch(f"/v1/subscriptions/{sub['id']}", json={"digest": {"after": 1, "window_minutes": 60}})
    assert patched.status_code == 200 and patched.json()["digest"] == {"after": 1, "window_minutes": 60}
    cleared = await api.patch(f"/v1/subscriptions/{sub['id']}", json={"digest": None})
    assert cleared.status_code == 200 and cleared.json()["digest"] is None
    bad = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in",
                                                    "digest": {"after": 0, "window_minutes": 10}})
    assert bad.status_code == 422 and "digest.after: must be greater than or equal to 1" in bad.text


async def test_health_shows_what_the_notifier_recorded(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    sub = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in"})).json()
    assert sub["enabled"] is True and sub["disabled_reason"] is None
    assert sub["health"] == {"state": "healthy", "consecutive_failures": 0, "failing_since": None,
                             "circuit_open_until": None, "last_status": None, "last_error": None,
                             "last_failure_at": None, "last_success_at": None}
    health = EndpointHealthStore(redis_client, settings.keys, CircuitConfig(failure_threshold=2))
    t0_ms = 1_700_000_000_000
    for i in range(2):
        await health.record_failure(sub["id"], t0_ms + i, status=503, error="destination answered HTTP 503")
    got = (await api.get(f"/v1/subscriptions/{sub['id']}")).json()["health"]
    assert (got["state"], got["consecutive_failures"], got["last_status"]) == ("circuit_open", 2, 503)
    # one timestamp format in every answer: RFC 3339, UTC, milliseconds (as snapshots and actions)
    assert got["failing_since"] == "2023-11-14T22:13:20.000Z" and got["last_error"] == "destination answered HTTP 503"
    assert got["circuit_open_until"] == "2023-11-14T22:13:50.001Z"
    [listed] = (await api.get("/v1/subscriptions")).json()
    assert listed["health"] == got


async def test_disable_and_enable_through_patch(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    sub = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in"})).json()
    path = f"/v1/subscriptions/{sub['id']}"
    off = await api.patch(path, json={"enabled": False})
    assert off.status_code == 200, off.text
    assert (off.json()["enabled"], off.json()["disabled_reason"]) == (False, "disabled through the API")
    assert off.json()["health"]["state"] == "disabled" and off.json()["disabled_at"]
    health = EndpointHealthStore(redis_client, settings.keys)
    await health.record_failure(sub["id"], 1_700_000_000_000, status=500, error="x")
    on = await api.patch(path, json={"enabled": True, "description": "fixed the receiver"})
    assert on.status_code == 200
    assert (on.json()["enabled"], on.json()["disabled_reason"], on.json()["disabled_at"]) == (True, None, None)
    assert on.json()["description"] == "fixed the receiver"
    assert on.json()["health"]["consecutive_failures"] == 0  # a clean slate: old failures would disable it again
    null = await api.patch(path, json={"enabled": None})
    assert null.status_code == 422 and "enabled: must not be null" in null.json()["error"]["message"]
    assert (await api.patch("/v1/subscriptions/sub_nope", json={"enabled": True})).status_code == 404


async def test_replay_sends_a_subscriptions_dead_letters_again(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    sub = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in"})).json()
    other = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/other"})).json()
    clock = [1_700_000_000.0]
    store = DeliveryStore(redis_client, settings.keys, clock=lambda: clock[0])
    for sub_id, n in ((sub["id"], 3), (other["id"], 1)):
        for i in range(n):
            rec = DeliveryRecord.new(f"msg_{sub_id}_{i}", make_action(), sub_id, store.now_ms())
            await store.schedule([rec])
            clock[0] += 60
            await store.mark_failed(rec.id, attempts=7, last_status=500, last_error="destination answered HTTP 500")
    path = f"/v1/subscriptions/{sub['id']}/replay"
    since = await api.post(path, json={"since": "2023-11-14T22:15:20Z"})  # the last two only
    assert since.status_code == 200, since.text
    assert since.json() == {"subscription_id": sub["id"], "replayed": 2}
    rest = await api.post(path)
    assert rest.json()["replayed"] == 1
    assert (await api.post(path)).json()["replayed"] == 0
    assert {r.id for r in await store.list("pending")} == {f"msg_{sub['id']}_{i}" for i in range(3)}
    assert [r.id for r in await store.list("failed")] == [f"msg_{other['id']}_0"]  # the other one untouched
    await api.patch(f"/v1/subscriptions/{other['id']}", json={"enabled": False})
    disabled = await api.post(f"/v1/subscriptions/{other['id']}/replay")
    assert disabled.status_code == 409 and disabled.json()["error"]["code"] == "subscription_disabled"
    naive = await api.post(path, json={"since": "2023-11-14T22:14:20"})
    assert naive.status_code == 422 and "since" in naive.json()["error"]["message"]
    assert (await api.post("/v1/subscriptions/sub_nope/replay")).status_code == 404


async def test_mentions_are_created_read_replaced_and_cleared(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    mentions = {"alice": "U024BE7LH", "bob@crm": "U0BOB"}
    created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", "format": "slack",
                                                        "mentions": mentions})
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["mentions"] == mentions
    path = f"/v1/subscriptions/{sub['id']}"
    assert (await api.get(path)).json()["mentions"] == mentions
    assert [s["mentions"] for s in (await api.get("/v1/subscriptions")).json()] == [mentions]
    store = SubscriptionStore(redis_client, settings.keys)
    stored = await store.get(sub["id"])
    assert stored is not None and stored.mentions == mentions  # what the notifier renders with

    kept = await api.patch(path, json={"description": "sales team"})
    assert kept.status_code == 200 and kept.json()["mentions"] == mentions
    replaced = await api.patch(path, json={"mentions": {"carol": "U0CAROL"}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["mentions"] == {"carol": "U0CAROL"}  # replaced as a whole, not merged
    cleared = await api.patch(path, json={"mentions": None})
    assert cleared.status_code == 200 and cleared.json()["mentions"] == {}
    stored = await store.get(sub["id"])
    assert stored is not None and stored.mentions == {}

    plain = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in"})).json()
    assert plain["mentions"] == {}
    standard = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", "mentions": mentions})
    assert standard.status_code == 201 and standard.json()["mentions"] == mentions  # kept, has no effect there


@pytest.mark.parametrize(
    ("mentions", "fragment"),
    [
        ({f"rep-{n}": "U1" for n in range(501)}, "mentions: must have at most 500 items"),
        ({"": "U1"}, "mentions: key '' is not an owner rep id (1-200 characters)"),
        ({"r" * 201: "U1"}, "is not an owner rep id (1-200 characters)"),
        ({"alice": ""}, "mentions.alice: must have at least 1 character"),
        ({"alice": "x" * 201}, "mentions.alice: must have at most 200 characters"),
        ({"alice": "U024 BE7LH"}, "mentions.alice: must not contain spaces, line breaks or control characters"),
        ({"alice": "U024BE7LH\n"}, "mentions.alice: must not contain spaces, line breaks or control characters"),
        ({"alice": "U024\u0007"}, "mentions.alice: must not contain spaces, line breaks or control characters"),
        ({"alice": "<@U024BE7LH>"}, "mentions.alice: must not contain < > | or &"),
        ({"alice": "U1|alice"}, "mentions.alice: must not contain < > | or &"),
        ({"alice": 42}, "mentions.alice: must be a valid string"),
        (["alice"], "mentions: must be a JSON object, not array"),
    ],
    ids=["too-many", "empty-key", "long-key", "empty-id", "long-id", "space", "newline", "control", "slack-markup",
         "pipe", "number", "array"],
)
async def test_invalid_mentions_name_the_field(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis, mentions: object, fragment: str
) -> None:
    sub = (await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", "format": "teams",
                                                     "mentions": {"alice": "alice@contoso.com"}})).json()
    created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/in", "mentions": mentions})
    patched = await api.patch(f"/v1/subscriptions/{sub['id']}", json={"mentions": mentions})
    for response in (created, patched):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert fragment in response.json()["error"]["message"]
    [stored] = await SubscriptionStore(redis_client, settings.keys).list()
    assert stored.mentions == {"alice": "alice@contoso.com"}  # nothing created, nothing changed


SLACK = "https://hooks.slack.com/services/T0KNOWN01/B0KNOWN02/knownSlackSecret9abcd"
WECOM = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=known-wecom-key-0000-1234"


@pytest.mark.parametrize(("url", "fmt", "shown"), [
    (SLACK, "slack", "https://hooks.slack.com/services/…/…/…abcd"),
    (WECOM, "wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…1234"),
    ("https://hooks.example.com/fatigue?token=known-token-5678", "standard",
     "https://hooks.example.com/fatigue?token=…5678"),
])
async def test_chat_urls_and_url_tokens_are_masked_in_every_answer(
    common_settings: CommonSettings, redis_client: Redis, url: str, fmt: str, shown: str
) -> None:
    created = await SubscriptionStore(redis_client, common_settings.keys).create(url, ["fatigue.throttle"], format=fmt)
    async with running_api(ingest_settings_for(common_settings)) as api:
        answers = [await api.get(f"/v1/subscriptions/{created.id}"), await api.get("/v1/subscriptions"),
                   await api.patch(f"/v1/subscriptions/{created.id}", json={"description": "d"})]
    for answer in answers:
        assert answer.status_code == 200
        assert url not in answer.text and url.rsplit("/", 1)[-1] not in answer.text
    assert answers[0].json()["url"] == shown


async def test_a_masked_url_sent_back_is_refused(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings)) as api:
        response = await api.post("/v1/subscriptions", json={"url": "https://hooks.slack.com/services/…/…/…abcd"})
    assert response.status_code == 422 and "masked" in response.json()["error"]["message"]


async def test_a_dns_failure_while_checking_is_a_503_to_retry(
    common_settings: CommonSettings, redis_client: Redis
) -> None:
    from services.errors import DestinationUnresolved

    def dns_down(host: str, port: int) -> list[str]:
        raise DestinationUnresolved(f"temporary failure resolving {host}")

    settings = ingest_settings_for(common_settings)
    async with running_api(settings, app_options={"resolver": dns_down}) as api:
        response = await api.post("/v1/subscriptions", json={"url": "https://hooks.example.com/x"})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "destination_unresolvable"
    assert response.headers["retry-after"]
    assert await SubscriptionStore(redis_client, settings.keys).list() == []
