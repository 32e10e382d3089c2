"""The docs say what the system does: every API route is in docs/api.md's table (and every row there
is a route), every error code the API answers is in its errors table, the alert texts shown in
README.md and docs/events.md are the ones the core writes, the webhook example is what the notifier
sends, the scope table is what the routes check, the erasure example has the answer's kinds, the
Compose services are the ones operations.md lists."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from ingest.app import create_app
from ingest.routers.customers import ERASED_KINDS
from notifier import formats
from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.views import snapshot
from services.durations import DAY_MS
from services.policy.model import parse_policy
from services.settings import IngestSettings
from tests.ingest.helpers import ingest_settings_for, running_api

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "api.md"
ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \|", re.MULTILINE)


def normalized(path: str) -> str:
    """`/v1/subscriptions/{subscription_id}` and `/v1/subscriptions/{id}` name the same route."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def schema_routes() -> set[tuple[str, str]]:
    app = create_app(IngestSettings(api_keys=SecretStr("docs:" + "k" * 16)))
    return {(method.upper(), normalized(path)) for path, ops in app.openapi()["paths"].items() for method in ops}


def documented_routes() -> set[tuple[str, str]]:
    return {(method, normalized(path)) for method, path in ROW.findall(API_DOC.read_text())}


def test_every_route_of_the_openapi_schema_is_in_the_api_doc() -> None:
    missing = schema_routes() - documented_routes()
    assert not missing, f"docs/api.md's endpoint table lacks {sorted(missing)}"


def test_every_route_of_the_api_doc_exists() -> None:
    extra = documented_routes() - schema_routes()
    assert not extra, f"docs/api.md lists routes the API does not have: {sorted(extra)}"


def answered_error_codes() -> set[tuple[int, str]]:
    """(status, code) of every `ApiError(status, "code", …)` in ingest/ (literal arguments)."""
    found = set()
    for path in (REPO / "ingest").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError" and len(node.args) >= 2:
                status, code = node.args[:2]
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    found.add((int(status.value), str(code.value)))
    return found


def test_every_error_code_is_documented_with_its_status() -> None:
    table = set(re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", API_DOC.read_text(), re.MULTILINE))
    documented = {(int(status), code) for status, code in table}
    codes = answered_error_codes()
    assert len(codes) > 10, "the scan of ingest/ found too few ApiErrors to mean anything"
    missing = codes - documented
    assert not missing, f"docs/api.md's errors table lacks {sorted(missing)}"


def test_the_throttle_text_in_the_docs_is_the_one_the_core_writes() -> None:
    policy = parse_policy("signals:\n  unanswered_streak: {enabled: false}\n", "docs")
    now = 1_790_000_000_000
    state = CustomerState(customer_id="c1")
    actions = []
    for i in range(13):
        at = now - 29 * DAY_MS + i * (29 * DAY_MS // 13)
        actions += engine.apply_event(state, ContactEvent(f"t{i}", "touch", "c1", "email", at, kind="promo",
                                                          producer="crm"), now, policy).actions
    (throttle,) = actions
    written = throttle["suggestion"].split(" until ")[0]
    assert written == "Cool down: 13 touches in 30d (cap 12). Pause non-transactional touches"
    for doc in (REPO / "README.md", REPO / "docs" / "events.md"):
        assert written in doc.read_text(), f"{doc.name} shows a throttle text the core does not write"


def test_the_re_engage_text_in_the_readme_has_the_cores_shape() -> None:
    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "fatigue.re_engage" in line and "alert |" in line)
    assert re.search(r"Neglected: last touch \d+ days ago; cadence for stage \w+ is \d+ days\. "
                     r"Reach out on \w+ \(answers there most\), ideally around (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                     r"\d\d:00 [\w/]+\.", line), line


# ---- issue 17, finding 11: the docs say what the system does ----

WEBHOOKS_DOC = REPO / "docs" / "webhooks.md"
RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_block_after(text: str, marker: str) -> Any:
    """The first ```json block after `marker` in a document, parsed."""
    block = re.search(r"```json\n(.*?)\n```", text[text.index(marker):], re.DOTALL)
    assert block, f"no JSON example after {marker!r}"
    return json.loads(block.group(1))


def shape(value: Any) -> Any:
    """What a payload looks like, not what it says: keys, element shapes, types, timestamp formats."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, str):
        return "RFC 3339 UTC with ms" if RFC3339_MS_UTC.match(value) else "string"
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def a_throttle() -> dict[str, Any]:
    """What the notifier sends for a throttle the real core makes (a customer with a profile)."""
    policy = parse_policy("signals:\n  unanswered_streak: {enabled: false}\n", "docs")
    now = 1_790_000_000_000
    state = CustomerState(customer_id="cust-1")
    engine.apply_profile(state, {"tier": "A", "stage": "negotiation", "owner_rep_id": "rep-9"}, now, policy)
    actions = []
    for i in range(13):
        at = now - 29 * DAY_MS + i * (29 * DAY_MS // 13)
        actions += engine.apply_event(state, ContactEvent(f"t{i}", "touch", "cust-1", "email", at, kind="promo",
                                                          producer="crm"), now, policy).actions
    (throttle,) = actions
    return formats.render(throttle, "standard")


def test_the_webhook_example_payload_is_what_the_notifier_sends() -> None:
    documented = json_block_after(WEBHOOKS_DOC.read_text(), "The body is compact JSON")
    sent = a_throttle()
    assert shape(documented) == shape(sent), "docs/webhooks.md's example body differs from a real one"
    for name in sent["data"]:
        assert f"`{name}`" in WEBHOOKS_DOC.read_text(), f"docs/webhooks.md does not explain `{name}`"


SCOPED_KEYS = {"ingest": "docs-ingest-key-00001", "read": "docs-read-key-000001"}
PROVIDER_WEBHOOKS = re.compile(r"^/v1/adapters/(?!rejected$)")
"""Routes the providers call: their own signatures or tokens, no scope (docs/adapters.md)."""


async def route_scopes() -> dict[tuple[str, str], str]:
    """(method, route) -> the scope the API asks for: each route is called with an ingest key and a read
    key and answers 403 naming `required_scope` to the one that lacks it (no body: nothing is stored;
    Kafka and Redis are closed ports)."""
    keys = ",".join(f"{scope}:{secret}:{scope}" for scope, secret in SCOPED_KEYS.items())
    found: dict[tuple[str, str], set[str]] = {}
    async with running_api(ingest_settings_for(api_keys=SecretStr(keys))) as client:
        for method, route in sorted(schema_routes()):
            if not route.startswith("/v1/") or PROVIDER_WEBHOOKS.match(route):
                continue
            for secret in SCOPED_KEYS.values():
                answer = await client.request(method, route.replace("{}", "x"),
                                              headers={"Authorization": f"Bearer {secret}"})
                if answer.status_code == 403:
                    found.setdefault((method, route), set()).add(answer.json()["required_scope"])
    assert all(len(scopes) == 1 for scopes in found.values()), found
    return {route: scope for route, (scope,) in found.items()}


def documented_scopes() -> dict[tuple[str, str], str]:
    """(method, route) -> scope, as the scope table of docs/api.md#authentication says."""
    table = API_DOC.read_text().split("| scope | operations |")[1].split("\n\n")[0]
    documented = {}
    for scope, operations in re.findall(r"^\| `(\w+)` \| (.*) \|$", table, re.MULTILINE):
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`]+)`", operations):
            documented[(method, normalized(path))] = scope
        for prefix in re.findall(r"`(/[^`]+)`", operations.partition("everything under")[2]):
            documented.update({route: scope for route in schema_routes() if route[1].startswith(prefix)})
    return documented


async def test_the_scope_table_says_which_scope_each_operation_needs() -> None:
    actual = await route_scopes()
    assert len(actual) > 20, "the dependency scan found too few scoped routes to mean anything"
    assert documented_scopes() == actual, "docs/api.md's scope table differs from the routes' scope checks"
    column = {(method, normalized(path)): scope for method, path, scope in
              re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \| (\w+) \|", API_DOC.read_text(), re.M)}
    assert {route: column[route] for route in actual} == actual, "docs/api.md's endpoint table names other scopes"


def test_the_erasure_example_shows_every_kind_the_answer_has() -> None:
    example = json_block_after(API_DOC.read_text(), "## DELETE /v1/customers/{customer_id}")
    assert tuple(example["erased"]) == ERASED_KINDS


def test_the_compose_services_are_the_ones_operations_md_lists() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    running = {name for name, service in compose.items() if not service.get("profiles")}
    text = (REPO / "docs" / "operations.md").read_text()
    line = next(par for par in text.split("\n- ") if par.startswith("[`docker-compose.yml`]"))
    listed = set(re.findall(r"`([\w-]+)`", line))
    listed |= set(re.findall(r"\b(api|scorer|notifier|intake|redis|kafka)\b", line))
    assert running <= listed | {"kafka", "redis"} and "intake" in listed, f"operations.md lists {sorted(listed)}"


def test_the_by_kind_key_of_events_without_a_kind_is_documented() -> None:
    now = 1_790_000_000_000
    state, policy = CustomerState(customer_id="c1"), parse_policy("{}", "docs")
    engine.apply_event(state, ContactEvent("t", "touch", "c1", "email", now - DAY_MS // 2), now, policy)
    by_kind = snapshot(state, now, policy)["windows"]["24h"]["touches"]["by_kind"]
    (key,) = by_kind
    assert f'`"{key}"`' in API_DOC.read_text(), f"docs/api.md does not say events without a kind count as {key!r}"
