"""Every entry point turns invalid settings into one clear line and exit status 2, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue.cli import main

INVALID = {
    "notifier": ("FATIGUE_DELIVERY_TIMEOUT_S", "-1", "invalid notifier settings"),
    "scorer": ("FATIGUE_BATCH_MAX_EVENTS", "0", "invalid scorer settings"),
    "topics": ("FATIGUE_PARTITIONS", "zero", "invalid topics settings"),
}


@pytest.mark.parametrize("command", sorted(INVALID))
def test_invalid_settings_exit_2_naming_the_variable(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variable, value, message = INVALID[command]
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    with pytest.raises(SystemExit) as exited:
        main([command])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fatigue {command}: {message}")
    assert f"{variable}: " in err
    assert "Traceback" not in err


SECRET = "s3cret-Passw0rd"
BAD_REDIS_URL = f"http://fatigue:{SECRET}@redis.internal:6379/0"
ENTRY_POINTS = [["api"], ["scorer"], ["notifier"], ["intake"], ["topics"], ["dlq", "list"],
                ["customers", "list", "throttled"], ["import", "EVENTS"], ["up", "--port", "0"]]


@pytest.mark.parametrize("argv", ENTRY_POINTS, ids=lambda argv: argv[0])
def test_a_bad_redis_url_is_one_line_and_exit_2_in_every_process(argv: list[str], tmp_path: Path) -> None:
    """Before: a traceback from redis-py (CLI exit 1; the API exit 3 after ten repeated frames)."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1"}\n')
    env = {**os.environ, "REDIS_URL": BAD_REDIS_URL, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "FATIGUE_API_KEYS": "local:fk_0123456789abcdefghij:all", "FATIGUE_RUN_FILE": str(tmp_path / "run.json"),
           "FATIGUE_LOG_FORMAT": "text", "TMPDIR": str(tmp_path)}
    args = [str(events) if a == "EVENTS" else a for a in argv]
    done = subprocess.run([sys.executable, "-m", "fatigue.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, check=False)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(f"fatigue {argv[0]}: invalid ") and "REDIS_URL: must be redis://" in lines[0]
    assert lines[1].startswith("  what to do: ")
    assert SECRET not in done.stderr + done.stdout
    assert not list(tmp_path.glob("fatigue-up-*")), "up started something"
