"""GET /v1/policy and PUT /v1/policy: read, replace, refuse invalid documents, optimistic concurrency."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from ingest.errors import ApiError
from ingest.routers.policy import parse_if_match, policy_document, prefers_yaml
from services.policy.model import DEFAULT_POLICY_FILE
from services.settings import IngestSettings
from tests.ingest.helpers import AUTH, ingest_settings_for, running_api

STRICT = "# tighter band for the pilot\nfrequency:\n  warn_above: 4\n  throttle_above: 5\n  recover_at_or_below: 2\n"
BAD_DURATION = "version: 1\nwindows: [24h, 7d, 30d]\ngrace: 7days\n"  # line 3
YAML = {"content-type": "application/yaml"}


# ---- pure pieces (no infrastructure) ----


@pytest.mark.parametrize(
    ("accept", "yaml_wanted"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("application/yaml", True),
        ("text/yaml", True),
        ("application/json, application/yaml", False),
        ("application/json;q=0.5, application/yaml", True),
        ("application/yaml;q=0.1, */*;q=0.2", False),
    ],
)
def test_accept_header_picks_yaml_only_when_preferred(accept: str | None, yaml_wanted: bool) -> None:
    assert prefers_yaml(accept) is yaml_wanted


@pytest.mark.parametrize(("header", "version"), [(None, None), ("*", None), ('"3"', 3), ("3", 3), ('W/"0"', 0)])
def test_if_match_names_a_version(header: str | None, version: int | None) -> None:
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ['"v3"', "3, 4", '""'])
def test_if_match_that_is_not_a_version_is_a_bad_request(header: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_if_match(header)
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        (None, b"grace: 3d\n", 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", b"grace=3d", 415, "unsupported_media_type"),
        ("application/yaml", b"  \n", 422, "invalid_policy"),
        ("text/plain", b"\xff\xfe", 422, "invalid_policy"),
        ("application/json", b"{grace: 3d}", 400, "invalid_json"),
        ("application/json", b"[1, 2]", 422, "invalid_policy"),
    ],
)
def test_bodies_that_cannot_be_a_policy(content_type: str | None, body: bytes, status: int, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        policy_document(content_type, body)
    assert (refused.value.status_code, refused.value.code) == (status, code)


@pytest.mark.parametrize("content_type", ["application/yaml", "text/yaml", "text/plain; charset=utf-8"])
def test_yaml_bodies_are_taken_as_written(content_type: str) -> None:
    assert policy_document(content_type, STRICT.encode()) == STRICT


# ---- against a real Redis ----


@pytest.mark.integration
async def test_without_a_stored_policy_the_packaged_default_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/policy")
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["source"], body["updated_at"]) == (None, "default", None)
    assert body["yaml"] == DEFAULT_POLICY_FILE.read_text()
    assert body["policy"]["frequency"]["throttle_above"] == 12
    assert response.headers["etag"] == '"0"'


@pytest.mark.integration
async def test_put_then_get_returns_the_new_version(api: httpx.AsyncClient) -> None:
    put = await api.put("/v1/policy", content=STRICT, headers=YAML)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.headers["etag"] == '"1"'
    second = await api.put("/v1/policy", content=STRICT.replace("throttle_above: 5", "throttle_above: 6"), headers=YAML)
    assert second.json()["version"] == 2
    got = (await api.get("/v1/policy")).json()
    assert (got["version"], got["source"]) == (2, "api")
    assert got["yaml"].startswith("# tighter band for the pilot")  # comments kept
    assert got["policy"]["frequency"] == {
        "window": "30d", "warn_above": 4, "throttle_above": 6, "recover_at_or_below": 2,
        "uncounted_kinds": ["transactional"], "escalation_factor": 2.0,
    }
    assert got["updated_at"].endswith("Z") and len(got["updated_at"]) == len("2026-11-23T09:30:00.000Z")


@pytest.mark.integration
async def test_get_with_accept_yaml_answers_the_document(api: httpx.AsyncClient) -> None:
    await api.put("/v1/policy", content=STRICT, headers=YAML)
    response = await api.get("/v1/policy", headers={"Accept": "application/yaml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.text == STRICT


@pytest.mark.integration
async def test_a_json_object_is_accepted(api: httpx.AsyncClient) -> None:
    doc = {"frequency": {"warn_above": 3, "throttle_above": 4, "recover_at_or_below": 1}, "grace": "2d"}
    response = await api.put("/v1/policy", json=doc)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["policy"]["frequency"]["throttle_above"] == 4 and body["policy"]["grace"] == "2d"
    assert yaml.safe_load(body["yaml"]) == doc


@pytest.mark.integration
async def test_an_invalid_policy_is_refused_with_line_and_reason_and_the_old_one_stays(
    api: httpx.AsyncClient,
) -> None:
    await api.put("/v1/policy", content=STRICT, headers=YAML)
    response = await api.put("/v1/policy", content=BAD_DURATION, headers={"content-type": "text/plain"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_policy"
    assert error["message"].startswith("policy:3: grace: '7days' is not a duration")
    got = (await api.get("/v1/policy")).json()
    assert (got["version"], got["yaml"]) == (1, STRICT)


CURL_D_OF_THE_DEFAULT_FILE = DEFAULT_POLICY_FILE.read_text().replace("\n", "")
"""What `curl -d @policy.yaml` sends: the file without its newlines, one comment line (issue 17, finding 8)."""


@pytest.mark.integration
@pytest.mark.parametrize("body", [CURL_D_OF_THE_DEFAULT_FILE, "# just a comment", "# one\n\n# two\n"])
async def test_a_document_without_settings_is_refused_not_read_as_the_defaults(
    api: httpx.AsyncClient, body: str
) -> None:
    await api.put("/v1/policy", content=STRICT, headers=YAML)
    response = await api.put("/v1/policy", content=body, headers=YAML)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_policy"
    assert "holds no settings" in error["message"] and "--data-binary" in error["message"]
    got = (await api.get("/v1/policy")).json()
    assert (got["version"], got["yaml"]) == (1, STRICT)


@pytest.mark.integration
async def test_an_empty_mapping_still_means_all_defaults(api: httpx.AsyncClient) -> None:
    for body, headers in (("{}", YAML), ("{}", {"content-type": "application/json"})):
        response = await api.put("/v1/policy", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["policy"]["frequency"]["throttle_above"] == 12


@pytest.mark.integration
async def test_every_problem_is_listed_with_its_line(api: httpx.AsyncClient) -> None:
    document = "frequency:\n  throttle_above: 5\n  recover_at_or_below: 9\ncadence:\n  by_stage:\n    lead: 3x\n"
    response = await api.put("/v1/policy", content=document, headers=YAML)
    message = response.json()["error"]["message"]
    assert response.status_code == 422
    assert "policy:2: frequency: recover_at_or_below (9) must be below throttle_above (5)" in message
    assert "policy:6: cadence.by_stage: lead: '3x'" in message


@pytest.mark.integration
async def test_a_json_policy_reports_lines_of_what_was_sent(api: httpx.AsyncClient) -> None:
    body = '{\n  "grace": "7d",\n  "windows": ["24h", "7x"]\n}'
    response = await api.put("/v1/policy", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("policy:3: windows: '7x' is not a duration")


@pytest.mark.integration
async def test_concurrent_puts_get_distinct_versions(api: httpx.AsyncClient) -> None:
    documents = [STRICT.replace("throttle_above: 5", f"throttle_above: {5 + n}") for n in range(12)]
    answers = await asyncio.gather(*(api.put("/v1/policy", content=d, headers=YAML) for d in documents))
    assert {a.status_code for a in answers} == {200}
    assert sorted(a.json()["version"] for a in answers) == list(range(1, 13))
    final = (await api.get("/v1/policy")).json()
    winner = next(a.json() for a in answers if a.json()["version"] == 12)
    assert final["yaml"] == winner["yaml"]


@pytest.mark.integration
async def test_if_match_refuses_a_lost_update(api: httpx.AsyncClient) -> None:
    first = await api.put("/v1/policy", content=STRICT, headers={**YAML, "If-Match": '"0"'})
    assert first.status_code == 200
    etag = first.headers["etag"]
    other = await api.put("/v1/policy", content="grace: 3d\n", headers={**YAML, "If-Match": etag})
    assert other.status_code == 200
    stale = await api.put("/v1/policy", content="grace: 2d\n", headers={**YAML, "If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    assert "version 2, not 1" in stale.json()["error"]["message"]
    got = (await api.get("/v1/policy")).json()
    assert (got["version"], got["yaml"]) == (2, "grace: 3d\n")


@pytest.mark.integration
async def test_delete_goes_back_to_the_default(api: httpx.AsyncClient) -> None:
    await api.put("/v1/policy", content=STRICT, headers=YAML)
    assert (await api.delete("/v1/policy", headers={"If-Match": '"7"'})).status_code == 412
    assert (await api.get("/v1/policy")).json()["version"] == 1
    deleted = await api.delete("/v1/policy", headers={"If-Match": '"1"'})
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await api.get("/v1/policy")).json()["source"] == "default"
    assert (await api.delete("/v1/policy")).status_code == 204  # idempotent
    assert (await api.put("/v1/policy", content=STRICT, headers=YAML)).json()["version"] == 3


@pytest.mark.integration
async def test_a_hand_written_invalid_document_is_shown_with_its_problem(
    api: httpx.AsyncClient, redis_client: Redis, settings: IngestSettings
) -> None:
    record = {"version": "4", "yaml": BAD_DURATION, "updated_at": "2026-11-23T09:30:00+00:00"}
    await redis_client.hset(settings.keys.policy(), mapping=record)
    body = (await api.get("/v1/policy")).json()
    assert (body["version"], body["policy"], body["yaml"]) == (4, None, BAD_DURATION)
    assert body["problem"].startswith("stored policy v4:3: grace:")


@pytest.mark.integration
async def test_a_version_refused_by_a_scorer_at_run_time_shows_why(
    api: httpx.AsyncClient, redis_client: Redis, settings: IngestSettings
) -> None:
    from services.policy.store import PolicySource

    put = await api.put("/v1/policy", content=STRICT, headers=YAML)
    version = put.json()["version"]
    await PolicySource(redis_client, settings.keys).report_problem(version, "refused by the scorer at run time: X")
    body = (await api.get("/v1/policy")).json()
    assert (body["version"], body["problem"]) == (version, "refused by the scorer at run time: X")
    assert body["policy"]["frequency"]["throttle_above"] == 5
    await PolicySource(redis_client, settings.keys).report_problem(version - 1, "about another version")
    assert (await api.get("/v1/policy")).json()["problem"] == "refused by the scorer at run time: X"


@pytest.mark.integration
async def test_a_hand_written_unreadable_record_is_a_problem_not_a_500(
    api: httpx.AsyncClient, redis_client: Redis, settings: IngestSettings
) -> None:
    await redis_client.hset(settings.keys.policy(), mapping={"version": "x", "yaml": "a: 1"})
    response = await api.get("/v1/policy")
    assert response.status_code == 200 and "unreadable" in response.json()["problem"]


@pytest.mark.parametrize(("body", "fragment"), [
    ("windows: [24h, 3000000d]\n", "policy:1: windows: '3000000d' is longer than 400d"),
    ("signals:\n  complaint:\n    cool_off: 3000000d\n", "policy:3: signals.complaint.cool_off: '3000000d' is longer"),
    ("a: " + "[" * 900 + "]" * 900 + "\n", "policy:1: nested deeper than 16 levels"),
    ("frequency: {throttle_above: 100000000000000000000}\n", "less than or equal to 10000"),
])
async def test_policies_the_core_cannot_run_are_refused_at_put(body: str, fragment: str) -> None:
    async with running_api(ingest_settings_for()) as api:  # refused before Redis is needed
        response = await api.put("/v1/policy", content=body, headers=YAML)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]


async def test_a_deeply_nested_json_policy_is_a_400() -> None:
    async with running_api(ingest_settings_for()) as api:
        response = await api.put("/v1/policy", content=b'{"a":' * 900 + b"1" + b"}" * 900,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "json_too_deep"


@pytest.mark.integration
async def test_the_body_limit_applies(settings: IngestSettings) -> None:
    async with running_api(settings.model_copy(update={"max_body_bytes": 1024})) as api:
        response = await api.put("/v1/policy", content="# " + "x" * 2000 + "\n", headers=YAML)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.integration
async def test_the_policy_needs_an_api_key(api: httpx.AsyncClient) -> None:
    no_key = {"Authorization": ""}
    assert (await api.get("/v1/policy", headers=no_key)).status_code == 401
    assert (await api.put("/v1/policy", content=STRICT, headers={**YAML, **no_key})).status_code == 401
    assert (await api.get("/v1/policy", headers=AUTH)).json()["source"] == "default"  # nothing was stored


async def test_redis_down_is_503_and_nothing_is_stored() -> None:
    async with running_api(ingest_settings_for()) as api:  # closed ports: no Kafka, no Redis
        put = await api.put("/v1/policy", content=STRICT, headers=YAML)
        get = await api.get("/v1/policy")
    for response in (put, get):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert response.headers["retry-after"] == "5"


async def test_a_refused_document_is_refused_before_redis_is_asked() -> None:
    async with running_api(ingest_settings_for()) as api:  # Redis is down: a 422 proves it was not needed
        response = await api.put("/v1/policy", content=BAD_DURATION, headers=YAML)
    assert response.status_code == 422


async def test_openapi_describes_the_operations() -> None:
    async with running_api(ingest_settings_for()) as api:
        schema = (await api.get("/openapi.json")).json()
    operations = schema["paths"]["/v1/policy"]
    assert set(operations) == {"get", "put", "delete"}
    assert operations["get"]["responses"]["200"]["content"]["application/yaml"]["schema"]["type"] == "string"
    body = operations["put"]["requestBody"]["content"]
    assert {"application/yaml", "text/yaml", "text/plain", "application/json"} <= set(body)
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/PolicyDoc"}
    assert "PolicyDoc" in schema["components"]["schemas"]
    assert {"200", "412", "415", "422", "503"} <= set(operations["put"]["responses"])
    assert "If-Match" in [p["name"] for p in operations["put"]["parameters"]]
