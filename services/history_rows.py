"""Reading rows of history files (JSONL or CSV, optionally gzip-compressed) one at a time.

Shared by the backtest (scorer/history.py) and `fatigue import` (fatigue/importer.py), so both
read a file the same way: JSONL is one object per non-blank line; CSV has a header row, empty
cells are absent and an `attributes` cell holds JSON. Each row comes with the line number where
it starts; a row that cannot be read is a string saying why, for the caller to report.
Nothing is held beyond the current row (constant memory).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

RawRow = tuple[int, dict[str, Any] | str]
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def format_of(path: Path) -> str | None:
    """jsonl or csv from the name (`events.csv`, `events.jsonl.gz`), None when it does not say."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def open_text(path: Path) -> IO[str]:
    """The file as text (UTF-8, a BOM skipped), decompressed on the fly when it ends in .gz."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def rows(handle: IO[str], fmt: str) -> Iterator[RawRow]:
    return jsonl_rows(handle) if fmt == "jsonl" else csv_rows(handle)


def jsonl_rows(lines: Iterator[str] | IO[str]) -> Iterator[RawRow]:
    """(line number, object) per non-blank line; a string instead of an object says what is wrong."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON: {exc.msg} (column {exc.colno})"
            continue
        except RecursionError:
            yield number, "not valid JSON: nested too deeply"
            continue
        yield number, data if isinstance(data, dict) else f"expected a JSON object, got {type(data).__name__}"


def csv_rows(lines: Iterator[str] | IO[str]) -> Iterator[RawRow]:
    """(line number where the record starts, row without empty cells); blank lines ignored."""
    counted = _LineCounter(iter(lines))
    reader = csv.reader(counted)
    header: list[str] | None = None
    start = 1
    for cells in reader:
        if cells and header is None:
            header = [name.strip() for name in cells]
        elif cells:
            yield start, _csv_row(header or [], cells)
        start = counted.number + 1


class _LineCounter:
    """Iterates lines and counts them, so a CSV record's first line is known."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.number = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        return line


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any] | str:
    if len(cells) > len(header):
        return f"{len(cells)} cells but the header names {len(header)} columns"
    data: dict[str, Any] = {key: value for key, value in zip(header, cells, strict=False) if value != ""}
    if "attributes" in data:
        try:
            data["attributes"] = json.loads(data["attributes"])
        except json.JSONDecodeError as exc:
            return f"attributes: not valid JSON: {exc.msg} (column {exc.colno})"
        except RecursionError:
            return "attributes: not valid JSON: nested too deeply"
    return data
