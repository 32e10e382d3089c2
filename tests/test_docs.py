"""The docs say what the system does: every API route is in docs/api.md's table (and every row there
is a route), every error code the API answers is in its errors table, and the alert texts shown in
README.md and docs/events.md are the ones the core writes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic import SecretStr

from ingest.app import create_app
from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from services.durations import DAY_MS
from services.policy.model import parse_policy
from services.settings import IngestSettings

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
