"""Every key can do only what its scopes say; a key over its rate waits. Real broker and Redis."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.settings import CommonSettings
from tests.ingest.helpers import event, ingest_settings_for, running_api

pytestmark = pytest.mark.integration

INGEST, READ, ADMIN, SLOW = ("ingest-only-key-0001", "read-only-key-00002", "admin-only-key-0003",
                             "slow-ingest-key-0004")
KEYS = f"producer:{INGEST}:ingest,dash:{READ}:read,ops:{ADMIN}:admin,slow:{SLOW}:ingest:2/m"


def as_key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


CALLS = [  # method, path, body, the scope it needs
    ("POST", "/v1/events", [event(event_id="s1")], "ingest"),
    ("PUT", "/v1/customers/cust-1/profile", {"tier": "A"}, "ingest"),
    ("GET", "/v1/customers/cust-1", None, "read"),
    ("GET", "/v1/customers/cust-1/decision?channel=email", None, "read"),
    ("GET", "/v1/policy", None, "read"),
    ("PUT", "/v1/policy", {"frequency": {"throttle_above": 20}}, "admin"),
    ("DELETE", "/v1/policy", None, "admin"),
    ("GET", "/v1/subscriptions", None, "admin"),
    ("POST", "/v1/subscriptions", {"url": "https://hooks.example.com/x"}, "admin"),
    ("DELETE", "/v1/subscriptions/sub_x", None, "admin"),
    ("GET", "/v1/deliveries?status=failed", None, "admin"),
    ("POST", "/v1/deliveries/msg_x/retry", None, "admin"),
    ("DELETE", "/v1/customers/cust-1", None, "admin"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS, ids=[f"{c[0]} {c[1]}" for c in CALLS])
async def test_each_operation_needs_its_scope(
    common_settings: CommonSettings, method: str, path: str, body: object, scope: str
) -> None:
    settings = ingest_settings_for(common_settings, api_keys=SecretStr(KEYS))
    async with running_api(settings) as api:
        for secret, key_scope in ((INGEST, "ingest"), (READ, "read"), (ADMIN, "admin")):
            response = await api.request(method, path, json=body, headers=as_key(secret))
            if key_scope == scope:
                assert response.status_code != 403, response.text
            else:
                assert response.status_code == 403, (secret, response.text)
                error = response.json()
                assert error["error"]["code"] == "forbidden" and error["required_scope"] == scope
                assert f"lacks the {scope!r} scope" in error["error"]["message"]


async def test_refused_calls_change_nothing(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, api_keys=SecretStr(KEYS))
    async with running_api(settings) as api:
        put = await api.put("/v1/policy", json={"frequency": {"throttle_above": 20, "recover_at_or_below": 3}},
                            headers=as_key(INGEST))
        policy = await api.get("/v1/policy", headers=as_key(READ))
    assert put.status_code == 403 and policy.json()["source"] == "default"


async def test_a_key_over_its_rate_gets_429_with_retry_after(common_settings: CommonSettings) -> None:
    settings = ingest_settings_for(common_settings, api_keys=SecretStr(KEYS))
    async with running_api(settings) as api:
        answers = [await api.post("/v1/events", json=event(event_id=f"r{i}"), headers=as_key(SLOW)) for i in range(3)]
        other = await api.post("/v1/events", json=event(event_id="o1"), headers=as_key(INGEST))
        metrics = (await api.get("/metrics")).text
    assert [a.status_code for a in answers[:1]] == [202]
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert other.status_code == 202  # the limit is per key
    assert 'fatigue_ingest_requests_refused_total{reason="rate_limited"}' in metrics


async def test_503_answers_name_the_dependency_not_its_address(common_settings: CommonSettings) -> None:
    from tests.ingest.helpers import closed_port_address

    broker = closed_port_address()
    store = closed_port_address()
    settings = ingest_settings_for(kafka_bootstrap_servers=broker, redis_url=f"redis://{store}/0",
                                   api_keys=SecretStr(KEYS), kafka_request_timeout_s=1.0)
    async with running_api(settings) as api:
        answers = [await api.post("/v1/events", json=event(event_id="x"), headers=as_key(INGEST)),
                   await api.get("/v1/customers/c1", headers=as_key(READ)),
                   await api.get("/readyz")]
    assert [a.status_code for a in answers] == [503, 503, 503]
    for answer in answers:
        for address in (broker, store, broker.split(":")[1], store.split(":")[1]):
            assert address not in answer.text
    assert "event log" in answers[0].json()["error"]["message"]
    assert "state store" in answers[1].json()["error"]["message"]
