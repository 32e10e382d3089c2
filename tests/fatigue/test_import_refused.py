"""`fatigue import` with an event the event log refuses for its own size: counted and reported as
refused, never retried, the rest stored (issue 17: errors classified once)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.settings import CommonSettings
from tests.ingest.helpers import consume, value_of

pytestmark = pytest.mark.integration


async def test_an_event_too_large_for_the_events_topic_is_reported_as_refused(
        common_settings: CommonSettings, infra_env: dict[str, str], tmp_path: Path) -> None:
    """The limit is set here on the importer's producer (FATIGUE_KAFKA_MAX_REQUEST_BYTES = 2048:
    aiokafka's `max_request_size`, checked before sending); the embedded broker enforces no
    max.message.bytes. Before, a refused write was "Kafka unavailable": retried for a minute, then
    the import stopped."""
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    events = [{"event_id": f"i-{i}", "type": "touch", "customer_id": "cust-1", "channel": "email",
               "occurred_at": at} for i in range(3)]
    events[1]["attributes"] = {"notes": "n" * 4000}
    source = tmp_path / "history.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    report = tmp_path / "report.csv"
    env = {**os.environ, **infra_env, "FATIGUE_KAFKA_MAX_REQUEST_BYTES": "2048"}
    done = subprocess.run(
        [sys.executable, "-m", "fatigue.cli", "import", str(source), "--no-progress", "--producer", "hist",
         "--checkpoint", str(tmp_path / "cp.json"), "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 stored" in done.stderr and "1 refused" in done.stderr
    rows = list(csv.reader(report.open(encoding="utf-8")))
    [refused] = [row for row in rows[1:] if row[2] == "(event)"]
    assert "event_id i-1" in refused[3] and "2,048" in refused[3]
    stored = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic, expected=2)
    assert sorted(value_of(r)["event"]["event_id"] for r in stored) == ["i-0", "i-2"]
