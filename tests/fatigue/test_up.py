"""`fatigue up` as an operator meets it: a busy port fails fast, "ready" means ready, and a run's
output is JSON lines (off a terminal) with request ids and an access line per request."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fatigue.cli import main
from fatigue.embedded import free_port
from fatigue.supervisor import describe, make_plan
from services.metrics import version
from tests.helpers import FAST_GROUP_ENV, stop_process

API_KEY = "up-test-key-0123456789"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"contact-fatigue {version()}"
    assert version() != "unknown"


@pytest.mark.integration
def test_up_with_redis_url_set_uses_that_redis_and_starts_only_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REDIS_URL naming a Redis Cluster (here unreachable: the plan does not connect) is used as it is:
    no embedded redis-server, the banner says external and never shows the password."""
    cluster_url = "redis+cluster://app:s3cret-pw-0123@127.0.0.1:7000,127.0.0.1:7001"
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("REDIS_URL", cluster_url)
    plan = make_plan("127.0.0.1", free_port(), tmp_path)
    try:
        assert plan.embedded is not None and [p.name for p in plan.embedded.processes] == ["kafka"]
        assert plan.env["REDIS_URL"] == cluster_url and not (tmp_path / "redis.log").exists()
        banner = describe(plan)
        assert "redis+cluster://…@127.0.0.1:7000,127.0.0.1:7001  (external)" in banner
        assert f"{plan.env['KAFKA_BOOTSTRAP_SERVERS']}  (embedded)" in banner and "s3cret" not in banner
    finally:
        plan.embedded.stop()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("option", ["--port", "FATIGUE_METRICS_PORT"])
def test_a_busy_port_is_one_line_and_exit_2_before_anything_starts(busy_port: int, tmp_path: Path, option: str) -> None:
    args = [sys.executable, "-m", "fatigue.cli", "up", "--workdir", str(tmp_path / "w")]
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    if option == "--port":
        args += ["--port", str(busy_port)]
    else:
        args += ["--port", str(free_port())]
        env["FATIGUE_METRICS_PORT"] = str(busy_port)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"fatigue up: port {busy_port} on 127.0.0.1 is already in use; choose another with "
        + ("--port" if option == "--port" else "FATIGUE_METRICS_PORT=<port>")
    ]
    assert done.stdout == ""  # no banner, no URL that would reach whatever listens there
    assert not (tmp_path / "w").exists(), "the embedded broker and Redis were started"


@pytest.mark.integration
def test_a_run_logs_json_lines_with_request_ids_and_says_ready_only_when_consumers_joined(
    infra_env: dict[str, str], tmp_path: Path, unique: str
) -> None:
    port = free_port()
    env = {
        **os.environ, **infra_env, **FAST_GROUP_ENV,
        "FATIGUE_API_KEYS": f"crm:{API_KEY}",
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
    }
    env.pop("FATIGUE_LOG_FORMAT", None)  # off a terminal: JSON by default
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fatigue.cli", "up", "--port", str(port), "--workdir", str(tmp_path / "up")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        ready = _wait_for_record(log_path, lambda r: r.get("ready") is True, proc, timeout_s=90)
        banner = _records(log_path)[0]
        readiness = {name: httpx.get(url, timeout=5).status_code for name, url in _readiness_urls(banner).items()}
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": f"req-{unique}"}
        answered = httpx.get(f"{base}/v1/customers/nobody-{unique}", headers=headers, timeout=10)
        refused = httpx.get(f"{base}/v1/policy", headers={"Authorization": "Bearer not-a-key-at-all"}, timeout=10)
        junk_id = httpx.get(f"{base}/v1/policy", headers={**headers, "X-Request-ID": "bad id\twith spaces"}, timeout=10)
        time.sleep(0.5)
    finally:
        stop_process(proc, signal.SIGINT, timeout_s=40)
    records = _records(log_path)  # every line of the run is one JSON object

    assert readiness == {"api": 200, "scorer": 200, "notifier": 200}, ready
    assert answered.status_code == 404 and answered.headers["X-Request-ID"] == f"req-{unique}"
    assert refused.status_code == 401 and len(refused.headers["X-Request-ID"]) == 32
    assert junk_id.headers["X-Request-ID"] != "bad id\twith spaces"
    for record in records:
        assert {"time", "level", "logger", "message", "service"} <= set(record), record
    assert {r["service"] for r in records} >= {"supervisor", "api", "scorer", "notifier"}
    access = [r for r in records if r["logger"] == "fatigue.access"]
    (mine,) = [r for r in access if r.get("request_id") == f"req-{unique}"]
    assert {k: mine[k] for k in ("method", "route", "status", "key_name")} == {
        "method": "GET", "route": "/v1/customers/{customer_id}", "status": 404, "key_name": "crm"}
    assert isinstance(mine["duration_ms"], float)
    (unauthorized,) = [r for r in access if r.get("request_id") == refused.headers["X-Request-ID"]]
    assert (unauthorized["status"], unauthorized["key_name"]) == (401, "-")
    assert API_KEY not in log_path.read_text()
    assert not [r for r in records if r.get("wrapped")], "a child printed something that is not a JSON record"


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _readiness_urls(banner: dict[str, Any]) -> dict[str, str]:
    api, scorer, notifier = banner["metrics"]
    return {name: url.removesuffix("/metrics") + "/readyz"
            for name, url in (("api", api), ("scorer", scorer), ("notifier", notifier))}


def _wait_for_record(path: Path, wanted: Any, proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, path.read_text()[-3000:]
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for record in map(json.loads, lines[:-1] if lines and not lines[-1].endswith("}") else lines):
            if wanted(record):
                return record  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"no such record within {timeout_s}s: {path.read_text()[-3000:]}")
