"""The backtest and `fatigue import` read a history under one contract (issue 17, finding 10): a row
dated further in the future than every intake allows is refused by both, with the same reason —
before, the backtest replayed it while the import refused it."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fatigue.cli import main

FUTURE_REASON = "s in the future (at most 300s allowed); check the sending system's clock"


def history(path: Path, ahead: timedelta) -> Path:
    now = datetime.now(UTC)
    rows = [{"event_id": f"f{i}", "type": "touch", "customer_id": "c1", "channel": "email", "kind": "promo",
             "occurred_at": (now + offset).isoformat()} for i, offset in enumerate((-timedelta(days=1), ahead))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_row_dated_in_the_future_is_refused_by_the_backtest_as_by_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = history(tmp_path / "events.jsonl", timedelta(days=2))
    with pytest.raises(SystemExit) as exited:
        main(["backtest", str(path)])
    assert exited.value.code == 2
    backtest_err = capsys.readouterr().err
    assert f"fatigue backtest: {path}:2: occurred_at: " in backtest_err and FUTURE_REASON in backtest_err

    with pytest.raises(SystemExit) as exited:
        main(["import", str(path), "--dry-run", "--no-progress", "--report", str(tmp_path / "report.csv")])
    assert exited.value.code == 0
    with (tmp_path / "report.csv").open(newline="") as handle:
        (_, (file, row, field, reason)) = list(csv.reader(handle))
    assert (file, row, field) == (str(path), "2", "occurred_at") and FUTURE_REASON in reason


def test_skip_invalid_skips_the_future_row_and_a_small_skew_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = history(tmp_path / "events.jsonl", timedelta(days=2))
    main(["backtest", str(path), "--skip-invalid"])
    out = capsys.readouterr()
    assert "1 invalid rows skipped" in out.out and FUTURE_REASON in out.err
    near = history(tmp_path / "near.jsonl", timedelta(seconds=60))
    main(["backtest", str(near)])
    assert "2 valid rows" in capsys.readouterr().out
