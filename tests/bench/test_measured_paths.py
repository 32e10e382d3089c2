"""What two benchmarks measure, checked without timing anything: the path the figure is named for.

- Section 5 times event -> webhook for *live* events. Since issue 18 the scorer treats events older
  than FATIGUE_TIMER_SETTLE_S when processed as history, told by the customer's timer after the
  settle (30 s): touches weeks old would time the settle, not the pipeline.
- Section 3 times `fatigue import` itself. The suite runs no scorer beside it, so the importer's wait
  for the scorer to process and settle what it stored (--alerts-wait, 120 s by default) would be
  timed as import time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bench.end_to_end import TOUCHES, touches
from bench.import_throughput import import_command
from services.settings import ScorerSettings


def test_section_5_posts_live_touches_that_trip_the_throttle() -> None:
    posted = touches("c1")
    ages_s = [(datetime.now().astimezone() - datetime.fromisoformat(t["occurred_at"])).total_seconds()
              for t in posted]
    assert len(posted) == TOUCHES > 12  # over the default frequency cap (12 in 30 days)
    assert all(0 <= age < ScorerSettings().timer_settle_s / 2 for age in ages_s), ages_s
    assert len({t["event_id"] for t in posted}) == TOUCHES


def test_section_3_times_the_import_without_waiting_for_a_scorer(tmp_path: Path) -> None:
    command = import_command(tmp_path / "history.jsonl", tmp_path, batch=1000, progress=False)
    assert "--alerts-wait" in command and command[command.index("--alerts-wait") + 1] == "0", command
