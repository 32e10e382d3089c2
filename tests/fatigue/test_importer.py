"""`fatigue import` without infrastructure: column mapping, formats (.gz too), the validation
report, the dry run and the checkpoint."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from fatigue.importer import Checkpoint, ColumnMap, Counts, Importer, ImportJob, column_map, count_rows
from services.errors import ConfigError


class NoBar:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


ROWS = [
    {"id": "x1", "kind_of": "touch", "contact": "c1", "medium": "Call", "when": "2026-11-20T09:00:00Z"},
    {"id": "x2", "kind_of": "touch", "contact": "c1", "medium": "Fax", "when": "2026-11-20T10:00:00Z"},
    {"id": "x3", "kind_of": "touch", "contact": "", "medium": "Email", "when": "2026-11-20"},
]
MAPPING = column_map(["event_id=id", "type=kind_of", "customer_id=contact", "channel=medium", "occurred_at=when"],
                     ["channel:Call=phone", "channel:Email=email"], [], None)


def write_csv(path: Path, rows: list[dict]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_column_map_renames_maps_values_and_drops_other_columns() -> None:
    assert MAPPING.apply(ROWS[0] | {"notes": "x"}) == {
        "event_id": "x1", "type": "touch", "customer_id": "c1", "channel": "phone",
        "occurred_at": "2026-11-20T09:00:00Z"}
    assert ColumnMap().apply({"anything": 1}) == {"anything": 1}  # no mapping: rows as they are


def test_a_mapping_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("columns: {event_id: id}\nvalues: {channel: {Call: phone}}\n"
                                     "constants: {type: touch}\n")
    mapped = column_map(["customer_id=contact"], [], ["type=response"], tmp_path / "m.yaml")
    assert mapped.columns == {"event_id": "id", "customer_id": "contact"} and mapped.constants == {"type": "response"}
    with pytest.raises(ConfigError, match="unknown contract fields"):
        column_map(["colour=c"], [], [], None)
    with pytest.raises(ConfigError, match="FIELD:FROM=TO"):
        column_map([], ["channel=phone"], [], None)


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz"])
async def test_dry_run_reports_row_field_and_reason(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_csv(path, ROWS)
    assert count_rows([path], None) == 3
    job = ImportJob(files=[path], producer="import", columns=MAPPING, dry_run=True,
                    checkpoint_path=tmp_path / "cp")
    report = io.StringIO()
    bar = NoBar()
    counts = await Importer(job, None, bar).run(report)
    assert (counts.rows, counts.valid, counts.invalid, counts.accepted) == (3, 1, 2, 0)
    lines = list(csv.reader(io.StringIO(report.getvalue())))
    assert lines[0] == ["file", "row", "field", "reason"]
    problems = {(row, field) for _, row, field, _ in lines[1:]}
    assert problems == {("3", "channel"), ("4", "customer_id"), ("4", "occurred_at")}  # CSV line numbers
    assert bar.n == 3 and not (tmp_path / "cp").exists()  # a dry run writes no checkpoint


async def test_jsonl_without_a_mapping_and_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = {"event_id": "j1", "type": "touch", "customer_id": "c1", "channel": "sms",
            "occurred_at": "2026-11-20T09:00:00+08:00"}
    path.write_text(json.dumps(good) + "\n\n[1, 2]\n" + json.dumps({**good, "extra": 1}) + "\n")
    report = io.StringIO()
    counts = await Importer(ImportJob(files=[path], producer="p", dry_run=True), None, NoBar()).run(report)
    assert (counts.rows, counts.valid, counts.invalid) == (3, 1, 2)
    assert "extra" in report.getvalue() and "expected a JSON object, got list" in report.getvalue()


def test_checkpoint_round_trip_and_refuses_another_producer(tmp_path: Path) -> None:
    path = tmp_path / "cp"
    Checkpoint("import", {"/a.csv": 41}, [], Counts(rows=40, valid=40, accepted=40)).save(path)
    loaded = Checkpoint.load(path, "import")
    assert loaded.files == {"/a.csv": 41} and loaded.counts.accepted == 40
    with pytest.raises(ConfigError, match="producer"):
        Checkpoint.load(path, "other")
    assert Checkpoint.load(tmp_path / "none", "import").files == {}
