"""Schemathesis over the live OpenAPI schema of a running API (real HTTP, real broker and Redis):
no 5xx and no answer that contradicts the schema, whatever the input.

Webhook destinations are resolved by an offline resolver (IP literals and localhost only), so no
fuzzed host name is ever looked up in DNS (../shared/TESTING.md)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

from fatigue.embedded import EmbeddedStack, free_port
from ingest.app import create_app
from scorer.dryrun import check_policy
from services.errors import DestinationRefused
from services.kafka import ensure_topics
from services.settings import CommonSettings
from tests.ingest.helpers import AUTH, ingest_settings_for

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 40
QUIET_RUN_S = 53
"""How long the whole run took on a quiet development machine (2 cores)."""
TIMEOUT_S = 15 * QUIET_RUN_S
"""The run's own timeout: room for a machine shared by several test runs (the suite's 120 s default
failed on a loaded machine, issue 17); a hang is still stopped."""
EXCLUDED_CHECKS = [positive_data_acceptance]
"""Schema-valid is not always acceptable: some rules of the one contract cannot be said in JSON Schema
(an event time within range of *now*, an IANA time zone name, a destination the policy allows, which
parameters combine). Those answer 4xx naming the field, which every other check still verifies."""


def offline_resolver(host: str, port: int) -> list[str]:
    """IP literals resolve to themselves, localhost to loopback; any other name does not exist."""
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        raise DestinationRefused(f"cannot resolve host {host!r}: no DNS in this test") from None


@pytest.fixture(scope="module")
def live_api(stack: EmbeddedStack) -> Iterator[str]:
    unique = uuid.uuid4().hex[:10]
    common = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers, redis_url=stack.redis_url,
                            topic_prefix=f"f{unique}.", redis_prefix=f"f{unique}:", partitions=3)
    asyncio.run(ensure_topics(common))
    app = create_app(ingest_settings_for(common), policy_check=check_policy, resolver=offline_resolver)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def fuzz(operation: schemathesis.APIOperation, base_url: str, mode: schemathesis.GenerationMode) -> None:
    """Hypothesis over one operation's strategy; raises the failing checks with their reproduction."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        # A text body (YAML, text/plain) has no schema-violating form on the wire: any text is a string.
        text_body = (case.media_type or "").startswith(("text/", "application/yaml"))
        skip = [negative_data_rejection] if text_body and mode is schemathesis.GenerationMode.NEGATIVE else []
        case.call_and_validate(base_url=base_url, excluded_checks=[*excluded, *skip])

    # Provider webhooks take a URL token *or* the bearer key: with the bearer key sent, a wrong token is
    # rightly accepted, which the ignored-auth check cannot tell from a missing check.
    alternatives = len(operation.definition.raw.get("security", [])) > 1
    excluded = [*EXCLUDED_CHECKS, *([ignored_auth] if alternatives else [])]

    run()


@pytest.mark.timeout(TIMEOUT_S)
def test_no_input_gets_a_5xx_or_an_answer_outside_the_schema(live_api: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")

    # The key reaches every case through schemathesis's auth provider, so each case is checked as it was
    # sent: with the key added only on the wire (`headers=`), a negative case whose negation was a
    # missing Authorization header plus an undeclared query parameter the client dropped was reported as
    # "schema-violating request accepted" (seen once in ten runs).
    @schema.auth()
    class ApiKey:
        def get(self, case: schemathesis.Case, ctx: object) -> str:
            return AUTH["Authorization"]

        def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in schemathesis.GenerationMode:  # schema-valid input, and input the schema says is invalid
            try:
                fuzz(operation, live_api, mode)
            except BaseExceptionGroup as exc:  # schemathesis reports failed checks as a group: collect them all
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert operations >= 20, f"only {operations} operations in the schema"
    assert failures == {}, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_the_fuzz_run_has_room_for_a_loaded_machine() -> None:
    """Its timeout is its own, many times a quiet run, not the suite's default."""
    marks = [mark for mark in getattr(test_no_input_gets_a_5xx_or_an_answer_outside_the_schema, "pytestmark", [])
             if mark.name == "timeout"]
    assert [mark.args for mark in marks] == [(TIMEOUT_S,)]
    assert TIMEOUT_S >= 10 * QUIET_RUN_S
