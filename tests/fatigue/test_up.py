"""`fatigue up` as an operator meets it: a busy port fails fast, "ready" means ready, and a run's
output is JSON lines (off a terminal) with request ids and an access line per request."""

from __future__ import annotations

import contextlib
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


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_stopped_while_starting_leaves_no_folder_behind(tmp_path: Path, sig: int) -> None:
    """Before: the /tmp/fatigue-up-* folder (logs, data, the API key file) stayed after every stop,
    and a SIGTERM before the supervisor's loop ran killed `up` without stopping anything."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update(TMPDIR=str(tmp), FATIGUE_RUN_FILE=str(tmp_path / "up.json"), FATIGUE_LOG_FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "fatigue.cli", "up", "--port", str(free_port())], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp.glob("fatigue-up-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(tmp.glob("fatigue-up-*")), "up made no work folder"
    finally:
        stop_process(proc, sig, timeout_s=60)
        left = _processes_working_in(tmp)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, "embedded servers were left running"
    assert not list(tmp.glob("fatigue-up-*")), "the work folder was left behind"
    assert not (tmp_path / "up.json").exists()


def _processes_working_in(folder: Path) -> list[int]:
    """Processes whose working directory is in `folder` (the embedded servers run in the work folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(str(folder)):
                found.append(int(entry.name))
    return found


@pytest.mark.integration
def test_commands_find_the_stack_through_the_run_file_removed_at_stop_with_the_folder(
    tmp_path: Path, unique: str
) -> None:
    """Before: `customers list` without REDIS_URL read 127.0.0.1:6379, not the embedded Redis on its
    random port, and `import` would have written its de-duplication claims there."""
    run_file, tmp = tmp_path / "run" / "up.json", tmp_path / "tmp"
    tmp.mkdir()
    outside = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    outside["FATIGUE_RUN_FILE"] = str(run_file)
    env = {**outside, **FAST_GROUP_ENV, "TMPDIR": str(tmp), "FATIGUE_LOG_FORMAT": "json",
           "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}"}
    env.pop("FATIGUE_API_KEYS", None)
    port = free_port()
    with (tmp_path / "up.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fatigue.cli", "up", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not run_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_file.exists(), (tmp_path / "up.log").read_text()
        recorded = json.loads(run_file.read_text())
        (workdir,) = tmp.glob("fatigue-up-*")
        key_file = Path(recorded["api_key_file"])
        assert (recorded["pid"], recorded["api_url"], recorded["workdir"]) == (proc.pid, f"http://127.0.0.1:{port}",
                                                                               str(workdir))
        assert run_file.stat().st_mode & 0o777 == 0o600 and key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() not in run_file.read_text()
        from_up = f"(from the fatigue up run file, pid {proc.pid})"

        listed = subprocess.run([sys.executable, "-m", "fatigue.cli", "customers", "list", "throttled"],
                                env=outside, capture_output=True, text=True, timeout=60, check=False)
        assert listed.returncode == 0, listed.stderr
        assert listed.stderr == f"fatigue customers: using Redis {recorded['redis_url']} {from_up}\n"
        assert listed.stdout.splitlines()[-1] == "0 customers on throttled"

        events = tmp_path / "events.jsonl"
        events.write_text("".join(json.dumps({"event_id": f"up-{i}", "type": "touch", "customer_id": "c1",
                                              "channel": "sms", "occurred_at": "2026-11-20T09:00:00Z"}) + "\n"
                                  for i in range(2)))
        imported = subprocess.run([sys.executable, "-m", "fatigue.cli", "import", str(events), "--no-progress",
                                   "--report", str(tmp_path / "r.csv"), "--checkpoint", str(tmp_path / "cp")],
                                  env=outside, capture_output=True, text=True, timeout=120, check=False)
        assert imported.returncode == 0, imported.stderr
        assert (f"fatigue import: using Kafka {recorded['kafka_bootstrap_servers']} {from_up} and "
                f"Redis {recorded['redis_url']} {from_up}") in imported.stderr
        assert "2 stored" in imported.stderr
    finally:
        stop_process(proc, signal.SIGTERM, timeout_s=60)
    assert not run_file.exists()
    assert not list(tmp.glob("fatigue-up-*")), "the work folder (with the API key file) was left behind"


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
