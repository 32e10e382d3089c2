"""The one logging set-up (services/logs.py): JSON lines, context fields, the redaction filter
everywhere, library chatter kept at WARNING."""

from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.logs import CHATTY_LOGGERS, RedactionFilter, log_context, setup_logging
from tests.services.test_redaction import API_KEY, CONFIGURED_KEY, SECRETS, SLACK_TOKEN, TEXTS, WECOM_KEY

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """Whatever a test sets up, the root logger and the record factory are as before afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), list(root.filters), root.level, logging.getLogRecordFactory())
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.filters[:] = saved[0], saved[1]
        root.setLevel(saved[2])
        logging.setLogRecordFactory(saved[3])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def captured() -> io.StringIO:
    """The root logger set up as a service would be, writing to a buffer."""
    stream = io.StringIO()
    setup_logging("INFO", service="api", stream=stream, known_secrets=[CONFIGURED_KEY])
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_fields_operators_filter_on(captured: io.StringIO) -> None:
    log = logging.getLogger("ingest.something")
    with log_context(request_id="req-1", event_id="evt-9"):
        log.info("accepted %d events", 3, extra={"key_name": "crm"})
    log.warning("no context here")
    first, second = lines(captured)
    assert {k: first[k] for k in ("service", "level", "logger", "message", "request_id", "event_id", "key_name")} == {
        "service": "api", "level": "INFO", "logger": "ingest.something", "message": "accepted 3 events",
        "request_id": "req-1", "event_id": "evt-9", "key_name": "crm",
    }
    assert str(first["time"]).endswith("+00:00")
    assert "request_id" not in second and second["level"] == "WARNING"


def test_exceptions_are_one_line_and_masked(captured: io.StringIO) -> None:
    try:
        raise ValueError(f"cannot post to https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}")
    except ValueError:
        logging.getLogger("notifier.delivery").exception("attempt failed")
    (record,) = lines(captured)
    assert "Traceback" in str(record["exc_info"]) and "ValueError" in str(record["exc_info"])
    assert WECOM_KEY not in captured.getvalue()


@pytest.mark.parametrize("text", TEXTS)
def test_library_loggers_are_masked_too(captured: io.StringIO, text: str) -> None:
    """A record of a library logger propagates to the root's handler: its filter masks it."""
    logging.getLogger("some.library").warning("%s", text)
    logging.getLogger("httpx").warning(text)
    output = captured.getvalue()
    assert len(lines(captured)) == 2
    assert not [secret for secret in SECRETS if secret in output], output


def test_arguments_and_extra_fields_are_masked(captured: io.StringIO) -> None:
    url = f"https://hooks.slack.com/services/T1/B2/{SLACK_TOKEN}"
    logging.getLogger("x").info("to %s with %r", url, {"Authorization": f"Bearer {API_KEY}"},
                                extra={"destination": url, "key": CONFIGURED_KEY})
    output = captured.getvalue()
    assert SLACK_TOKEN not in output and API_KEY not in output and CONFIGURED_KEY not in output
    (record,) = lines(captured)
    assert str(record["destination"]).startswith("https://hooks.slack.com/services/")


def test_the_filter_is_on_the_root_logger_and_every_handler_it_has() -> None:
    root = logging.getLogger()
    setup_logging("INFO", service="api", stream=io.StringIO())
    handler = setup_logging("INFO", service="notifier", stream=io.StringIO())  # set up twice: still one of each
    assert root.handlers == [handler]
    for target in (root, handler):
        assert sum(isinstance(f, RedactionFilter) for f in target.filters) == 1, target


def test_a_handler_added_later_gets_masked_records(captured: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    """pytest's own capture handler is added after set-up and has none of our filters."""
    with caplog.at_level(logging.INFO):
        logging.getLogger("late").info("POST https://hooks.slack.com/services/T1/B2/%s", SLACK_TOKEN)
        try:
            raise RuntimeError(f"Authorization: Bearer {API_KEY}")
        except RuntimeError:
            logging.getLogger("late").exception("failed")
    assert len(caplog.records) == 2
    assert SLACK_TOKEN not in caplog.text and API_KEY not in caplog.text


def test_library_chatter_stays_at_warning(captured: io.StringIO) -> None:
    for name in ("httpx", "httpcore", "aiokafka", "faust", "mode"):
        logging.getLogger(name).info("chatter")
        logging.getLogger(f"{name}.sub").info("chatter")
    assert captured.getvalue() == ""


def test_text_format_for_terminals() -> None:
    stream = io.StringIO()
    setup_logging("INFO", service="scorer", fmt="text", stream=stream)
    with log_context(action_id="act_1"):
        logging.getLogger("scorer.processor").info("action %s", "fatigue.throttle")
    line = stream.getvalue().strip()
    assert " INFO scorer scorer.processor: action fatigue.throttle [action_id=act_1]" in line


def test_no_module_configures_logging_on_its_own() -> None:
    """`logging.basicConfig` (or a handler of its own) anywhere but services/logs.py bypasses the filter."""
    offenders = []
    packages = ("fatigue", "ingest", "scorer", "notifier", "services")
    for path in [p for pkg in packages for p in (REPO / pkg).rglob("*.py")]:
        if path.name == "logs.py" and path.parent.name == "services":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("basicConfig", "dictConfig", "addHandler"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.attr}")
    assert not offenders


def test_python_warnings_become_json_records(captured: io.StringIO) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated call with token={SLACK_TOKEN}", UserWarning, stacklevel=1)
    (record,) = lines(captured)
    assert record["logger"] == "py.warnings" and "UserWarning" in str(record["message"])
    assert SLACK_TOKEN not in captured.getvalue()
