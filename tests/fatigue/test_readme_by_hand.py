"""README's "By hand" walkthrough, run as written against `fatigue up` whose output goes to a file
(so the banner masks the key): the receiver it starts prints the throttle (issue 17, finding 11: it
needed a receiver it never started, and a key the banner masks off a terminal).

Only what cannot be the same here is replaced: the ports (free ones instead of 8000 and 9999), the
scratch file, and the key line by its documented alternative for a masked banner, with the path the
banner names."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fatigue.embedded import free_port
from tests.helpers import FAST_GROUP_ENV, stop_process

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def by_hand_script() -> str:
    text = README.read_text()
    block = re.search(r"\*\*By hand\*\*.*?```bash\n(.*?)\n```", text, re.DOTALL)
    assert block, "README.md has no By hand bash block"
    return block.group(1)


def json_record(line: str) -> dict | None:
    """One JSON record of `up`'s log; None for anything else (e.g. the line still being written)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def banner_of(log_path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> dict:
    """The JSON banner of `up`, once it said ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        records = [record for line in log_path.read_text().splitlines() if (record := json_record(line))]
        if any(r.get("ready") is True for r in records):
            return next(r for r in records if "api_key_file" in r)
        time.sleep(0.3)
    raise AssertionError(f"`up` not ready within {timeout_s}s: {log_path.read_text()[-3000:]}")


@pytest.mark.timeout(300)
def test_the_by_hand_walkthrough_works_as_written(infra_env: dict[str, str], tmp_path: Path, unique: str) -> None:
    api_port, hook_port = free_port(), free_port()
    env = {**os.environ, **infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
           "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}"}
    for name in ("FATIGUE_API_KEYS", "FATIGUE_LOG_FORMAT"):
        env.pop(name, None)  # `up` generates the key; off a terminal it logs JSON and masks the key
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "fatigue.cli", "up", "--port", str(api_port),
                               "--workdir", str(tmp_path / "up")], env=env, stdout=log, stderr=subprocess.STDOUT)
    walkthrough = None
    try:
        banner = banner_of(log_path, up, timeout_s=90)
        assert banner["api_key"] != Path(banner["api_key_file"]).read_text().strip(), "the key is masked here"
        script = (by_hand_script()
                  .replace("KEY=fk_...   # from the banner, or: KEY=", "KEY=")  # the banner's key is masked here
                  .replace("/path/in/api_key_file", banner["api_key_file"])
                  .replace("localhost:8000", f"localhost:{api_port}").replace("9999", str(hook_port))
                  .replace("/tmp/touches.json", str(tmp_path / "touches.json")))
        assert script.startswith(f"KEY=$(cat {banner['api_key_file']})"), script[:200]
        output = tmp_path / "walkthrough.out"
        with output.open("wb") as out:
            walkthrough = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not ('"type":"fatigue.throttle"' in output.read_text() and '"events_counted"' in output.read_text()) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        printed = output.read_text()
    finally:
        if walkthrough is not None:  # the receiver runs on in the background, in the script's session
            os.killpg(walkthrough.pid, signal.SIGTERM)
            walkthrough.wait(timeout=10)
        stop_process(up, signal.SIGINT, timeout_s=40)
    assert '{"accepted":13,"duplicates":0,"rejected":[]}' in printed, printed[-3000:]
    start = printed.index('{"type":"fatigue.throttle"')  # curl's answers end without a newline
    throttle, _ = json.JSONDecoder().raw_decode(printed[start:])
    assert throttle["data"]["customer_id"] == "acme-042", throttle
    assert [r["rule"] for r in throttle["data"]["reasons"]] == ["frequency_cap", "unanswered_streak"], throttle
    assert printed.count('{"type":"fatigue.throttle"') == 1, printed[-3000:]  # one message, not one per rule
    start = printed.index('{"customer_id":"acme-042"')  # the live state step 3 reads
    state, _ = json.JSONDecoder().raw_decode(printed[start:])
    assert (state["status"], state["events_counted"]) == ("throttled", 13), state
