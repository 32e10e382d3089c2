"""The CLI never guesses where the stack is (issue 17, finding 7): the environment wins, then the run
file of a running `fatigue up`; a run file whose process is gone is ignored with a note; with
neither, exit 2 and one line. Every command says which Kafka / Redis it used, credentials masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue.runfile import NoStack, RunFile, locate, read_run_file, write_run_file

LOCATIONS = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")


def recorded(path: Path, pid: int) -> RunFile:
    run = RunFile(pid=pid, started_at="2026-12-07T10:00:00+00:00", kafka_bootstrap_servers="127.0.0.1:1111",
                  redis_url="redis://127.0.0.1:2222/0", api_url="http://127.0.0.1:8000", workdir="/tmp/w",
                  embedded=True, api_key_file="/tmp/w/api-key",
                  settings={"FATIGUE_REDIS_PREFIX": "up:", "FATIGUE_TOPIC_PREFIX": "up."})
    write_run_file(path, run)
    return run


def gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_the_run_file_is_private_and_holds_no_key(tmp_path: Path) -> None:
    path = tmp_path / "run" / "up.json"
    run = recorded(path, os.getpid())
    assert read_run_file(path) == run
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


def test_the_environment_wins_and_the_run_file_fills_in_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    recorded(path, os.getpid())
    env = {"FATIGUE_RUN_FILE": str(path), "REDIS_URL": "redis://:pa55word-of-redis@10.1.2.3:6379/0",
           "FATIGUE_TOPIC_PREFIX": "mine."}
    located = locate(env, kafka=True, redis=True)
    assert located.env["REDIS_URL"] == env["REDIS_URL"] and located.env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1111"
    assert located.env["FATIGUE_TOPIC_PREFIX"] == "mine." and located.env["FATIGUE_REDIS_PREFIX"] == "up:"
    assert located.line("import") == (
        f"fatigue import: using Kafka 127.0.0.1:1111 (from the fatigue up run file, pid {os.getpid()}) and "
        "Redis redis://…@10.1.2.3:6379/0 (from REDIS_URL)\n")
    explicit = locate({**env, "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, kafka=True, redis=True)
    assert "FATIGUE_REDIS_PREFIX" not in explicit.env  # nothing taken from a run file it did not use


def test_a_run_file_whose_process_is_gone_is_ignored_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    pid = gone_pid()
    recorded(path, pid)
    with pytest.raises(NoStack, match=f"fatigue up \\(pid {pid}\\) is not running any more"):
        locate({"FATIGUE_RUN_FILE": str(path)}, kafka=False, redis=True)
    located = locate({"FATIGUE_RUN_FILE": str(path), "REDIS_URL": "redis://h:1/0"}, kafka=False, redis=True)
    assert located.notes == []  # not even read when the environment says where


@pytest.mark.parametrize("argv", [["customers", "list", "throttled"], ["topics"], ["dlq", "list"],
                                  ["import", "EVENTS"]], ids=lambda argv: argv[0])
def test_without_environment_or_running_up_every_command_exits_2(argv: list[str], tmp_path: Path) -> None:
    """Before: `customers list` read whatever Redis was on 127.0.0.1:6379 ("0 customers", exit 0)
    and `import` would have written its de-duplication claims there."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1"}\n')
    env = {k: v for k, v in os.environ.items() if k not in LOCATIONS}
    env["FATIGUE_RUN_FILE"] = str(tmp_path / "up.json")
    args = [str(events) if a == "EVENTS" else a for a in argv]
    done = subprocess.run([sys.executable, "-m", "fatigue.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    needed = {"customers": "REDIS_URL", "topics": "KAFKA_BOOTSTRAP_SERVERS", "dlq": "KAFKA_BOOTSTRAP_SERVERS",
              "import": "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL"}[argv[0]]
    assert done.stderr.splitlines() == [
        f"fatigue {argv[0]}: {needed} not set and no `fatigue up` is running (no run file at {tmp_path / 'up.json'}): "
        "nothing says where the stack is",
        "  what to do: Set REDIS_URL and KAFKA_BOOTSTRAP_SERVERS to your stack, or start one with `fatigue up` "
        "(in another terminal) and run the command again.",
    ]
    assert done.stdout == ""
