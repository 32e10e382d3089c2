"""Reading history files in bounded memory: every kind of unreadable input is a row problem with its
line number, or FileUnreadable with the line reached (services/history_rows.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from services.history_rows import MAX_LINE_BYTES, FileUnreadable, count_lines, rows

GOOD = '{"event_id": "e1"}'


def test_a_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n\r\n" + GOOD.encode() + b"\r\n")
    assert list(rows(path, "jsonl")) == [(1, {"event_id": "e1"}), (3, {"event_id": "e1"})]
    assert count_lines(path) == 2


def test_jsonl_problems_are_rows_and_the_next_line_is_read(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\xff\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n" + b"y" * MAX_LINE_BYTES + b"\n" + GOOD.encode())
    found = list(rows(path, "jsonl"))
    assert found[0] == (1, "not valid UTF-8 (byte 0xff at byte 1 of the line)")
    assert found[1] == (2, "line longer than 1,048,576 bytes (skipped)")
    assert found[2][0] == 3 and str(found[2][1]).startswith("not valid JSON")  # exactly the bound: read
    assert found[3] == (4, {"event_id": "e1"})


def test_csv_problems_are_rows_with_the_line_where_the_record_starts(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    cell = "z" * 131_073
    many = ",".join(f'"{"q" * 1000}\n"' for _ in range(1100))  # 1,100 cells with line breaks: ~1.1 MB
    path.write_text(f'event_id,note\na1,ok\na2,"{cell}"\na3,caf\xe9\na4,{many}\n', encoding="latin-1")
    found = list(rows(path, "csv"))
    assert found[:4] == [
        (2, {"event_id": "a1", "note": "ok"}),
        (3, "a cell longer than 131,072 characters"),
        (4, "not valid UTF-8 (byte 0xe9 at byte 7 of the line)"),
        (5, "record longer than 1,048,576 bytes (the rest of it may be read as other rows)"),
    ]


def test_a_header_that_cannot_be_read_stops_the_file(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(b"event_id,\xff\na1,b\n")
    with pytest.raises(FileUnreadable, match="cannot be read past line 1: the header row cannot be read: not valid"):
        list(rows(path, "csv"))


@pytest.mark.parametrize(("content", "line", "reason"), [
    (b"not gzip at all\n", 0, "not a gzip file"),
    (gzip.compress((GOOD + "\n").encode() * 3000)[:-12], None, "the compressed data ends early"),
])
def test_a_gz_that_cannot_be_read_further(tmp_path: Path, content: bytes, line: int | None, reason: str) -> None:
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(content)
    read = []
    with pytest.raises(FileUnreadable, match=reason) as raised:
        read.extend(rows(path, "jsonl"))
    assert raised.value.line == (len(read) if line is None else line)
    with pytest.raises(FileUnreadable):
        count_lines(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileUnreadable, match=r"e\.jsonl: cannot be read: No such file"):
        list(rows(tmp_path / "e.jsonl", "jsonl"))
