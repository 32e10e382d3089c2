"""Reading rows of history files (JSONL or CSV, optionally gzip-compressed) one at a time.

Shared by the backtest (scorer/history.py) and `fatigue import` (fatigue/importer.py), so both
read a file the same way: JSONL is one object per non-blank line; CSV has a header row, empty
cells are absent and an `attributes` cell holds JSON. Each row comes with the line number where
it starts; a row that cannot be read is a string saying why, for the caller to report.

Memory is bounded whatever the file holds: it is read in binary (gzip streamed), a line at most
`MAX_LINE_BYTES` at a time. A longer line is skipped to its newline in chunks, never held whole,
and is a row problem; so are a line that is not UTF-8, a CSV cell longer than `MAX_FIELD_CHARS`
and a CSV record longer than `MAX_LINE_BYTES`. A file that cannot be read further (a truncated or
corrupt .gz, an I/O error) raises `FileUnreadable` with the line reached. Lines end with \\n
(or \\r\\n); a UTF-8 byte order mark at the start is skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from services.errors import FatigueError

RawRow = tuple[int, dict[str, Any] | str]
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
MAX_LINE_BYTES = 1024 * 1024
"""The longest line (JSONL) or record (CSV) read: 1 MiB, as the API's largest request body."""
MAX_FIELD_CHARS = 131_072
"""The longest CSV cell: the csv module's own limit (`csv.field_size_limit()`)."""
SKIP_CHUNK_BYTES = 64 * 1024
"""How much of an over-long line is read at a time while skipping it."""
_BOM = b"\xef\xbb\xbf"


class FileUnreadable(FatigueError):
    """A file cannot be read (further): missing, not gzip, truncated or corrupt compressed data, an
    I/O error. The rows before `line` were read; nothing after it can be."""

    operator_action = ("Repair or re-export the file named in the message (a truncated .gz: compress it again "
                       "from its source); the rows before that line were read.")

    def __init__(self, path: Path, line: int, reason: str) -> None:
        where = f"cannot be read past line {line}" if line else "cannot be read"
        super().__init__(f"{path}: {where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class Line(NamedTuple):
    """One line of a file, decoded; `problem` says why it cannot be used (then `text` is a stand-in)."""

    number: int
    text: str
    problem: str | None = None


def format_of(path: Path) -> str | None:
    """jsonl or csv from the name (`events.csv`, `events.jsonl.gz`), None when it does not say."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def rows(path: Path, fmt: str, on_header: Callable[[list[str]], None] | None = None) -> Iterator[RawRow]:
    """The file's rows: (line number, object or what is wrong). `on_header` sees a CSV header first
    (and may raise to refuse the file). FileUnreadable when the file cannot be read further."""
    numbered = lines(path)
    return jsonl_rows(numbered) if fmt == "jsonl" else csv_rows(numbered, path, on_header)


def lines(path: Path) -> Iterator[Line]:
    """The file's lines, decompressed on the fly when it ends in .gz, at most MAX_LINE_BYTES each."""
    for number, raw in _raw_lines(path):
        if raw is None:
            yield Line(number, "\n", f"line longer than {MAX_LINE_BYTES:,} bytes (skipped)")
            continue
        try:
            yield Line(number, raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)"
            yield Line(number, raw.decode("utf-8", errors="replace"), reason)


def count_lines(path: Path) -> int:
    """Non-blank lines (an over-long one counts), read as `lines` reads them but not decoded."""
    return sum(1 for _, raw in _raw_lines(path) if raw is None or raw.strip())


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(number, bytes) per line, the BOM skipped; None for a line longer than MAX_LINE_BYTES (skipped)."""
    try:
        handle: io.BufferedIOBase = gzip.GzipFile(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")
    except OSError as exc:
        raise FileUnreadable(path, 0, exc.strerror or str(exc)) from None
    number, limit = 0, MAX_LINE_BYTES + 1
    with handle:
        try:
            while raw := handle.readline(limit):
                number += 1
                if number == 1:
                    raw = raw.removeprefix(_BOM)
                if len(raw) >= limit and not raw.endswith(b"\n"):
                    _skip_line(handle)
                    yield number, None
                else:
                    yield number, raw
        except (EOFError, OSError, zlib.error) as exc:  # from reading: the consumer's errors do not come here
            raise FileUnreadable(path, number, _unreadable(exc)) from None


def _skip_line(handle: io.BufferedIOBase) -> None:
    """Read the rest of an over-long line to its newline, a chunk at a time, keeping none of it."""
    while (piece := handle.readline(SKIP_CHUNK_BYTES)) and not piece.endswith(b"\n"):
        pass


def _unreadable(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the compressed data ends early (a truncated .gz file?)"
    if isinstance(exc, gzip.BadGzipFile):
        return f"not a gzip file ({exc})"
    if isinstance(exc, zlib.error):
        return f"the compressed data is corrupt ({exc})"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def jsonl_rows(numbered: Iterator[Line]) -> Iterator[RawRow]:
    """(line number, object) per non-blank line; a string instead of an object says what is wrong."""
    for line in numbered:
        if line.problem is not None:
            yield line.number, line.problem
        elif line.text.strip():
            yield line.number, _json_object(line.text)


def _json_object(text: str) -> dict[str, Any] | str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return "not valid JSON: nested too deeply"
    return data if isinstance(data, dict) else f"expected a JSON object, got {type(data).__name__}"


def csv_rows(numbered: Iterator[Line], path: Path, on_header: Callable[[list[str]], None] | None = None
             ) -> Iterator[RawRow]:
    """(line number where the record starts, row without empty cells); blank lines ignored."""
    counted = _LineCounter(numbered)
    reader = csv.reader(counted)
    header: list[str] | None = None
    while True:
        start = counted.number + 1
        counted.new_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong) as exc:
            yield start, _csv_problem(exc)
            continue
        if header is None and cells and counted.problem is None:
            header = [name.strip() for name in cells]
            if on_header is not None:
                on_header(header)
        elif header is None and counted.problem is not None:
            raise FileUnreadable(path, counted.number, f"the header row cannot be read: {counted.problem}")
        elif counted.problem is not None:
            yield start, counted.problem
        elif cells:
            yield start, _csv_row(header or [], cells)


def _csv_problem(exc: Exception) -> str:
    if isinstance(exc, _RecordTooLong):
        return f"record longer than {MAX_LINE_BYTES:,} bytes (the rest of it may be read as other rows)"
    if "field limit" in str(exc):
        return f"a cell longer than {MAX_FIELD_CHARS:,} characters"
    return f"not valid CSV: {exc}"


class _RecordTooLong(Exception):
    """A CSV record (quoted line breaks) grew past MAX_LINE_BYTES."""


class _LineCounter:
    """Feeds lines to the csv reader: counts them (a record's first line is known), notes the
    first problem of the current record, and stops a record that grows past MAX_LINE_BYTES."""

    def __init__(self, numbered: Iterator[Line]) -> None:
        self._lines = numbered
        self.number = 0
        self.problem: str | None = None
        self._record_chars = 0

    def new_record(self) -> None:
        self.problem = None
        self._record_chars = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number = line.number
        self._record_chars += len(line.text)
        if line.problem is not None and self.problem is None:
            self.problem = line.problem
        if self._record_chars > MAX_LINE_BYTES:
            raise _RecordTooLong
        return line.text


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
