"""`fatigue import`: a history of events through the same envelope and de-duplication as the API.

Rows stream from CSV or JSONL files (also .gz) one at a time (services/history_rows.py), are
renamed by a column mapping, validated by the contract code of every intake
(`check_events`, what `AcceptPath.check` runs), and stored in batches through the shared accept path
(ingest/accept.py: claim ids -> publish envelopes acks=all -> confirm). Memory stays bounded:
one batch and one line of at most `MAX_LINE_BYTES`, whatever the files hold.

- Invalid rows go to the validation report (CSV: file, row, field, reason), never to Kafka. A valid
  event the event log refuses for its own properties (too large) is reported there too (field
  `(event)`, its event id and the limit), counted as refused and never retried.
- Rows that cannot be read (not UTF-8, over-long lines and cells) are report rows too. A CSV header without a
  column for a required field stops the run before anything is stored (`MissingColumns`). A file
  that cannot be read further (a truncated .gz) is a report row; the other files go on and the
  run ends with `FileUnreadable` (exit 2).
- `--dry-run` validates and reports, and touches neither Kafka nor Redis.
- `--rate` caps events per second so live traffic is not starved.
- A checkpoint file records, per file, the last row whose batch Kafka acknowledged (written
  after the acknowledgement, atomically). `--resume` skips those rows; a batch stored just before
  a crash but not yet checkpointed is sent again and its ids are found claimed: duplicates, not
  counted twice (the event ids must be stable, i.e. in the file).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import yaml

from ingest.accept import Accepted, AcceptPath, EventsInFlight
from ingest.validation import check_events
from services.contract import EventIn
from services.errors import BrokerUnavailable, ConfigError, FatigueError, RecordRefused
from services.history_rows import FileUnreadable, count_lines, format_of, rows

CHECKPOINT_VERSION = 1
RETRY_S = 1.0
CONTRACT_FIELDS = ("event_id", "type", "customer_id", "channel", "occurred_at", "rep_id", "campaign_id", "kind",
                   "in_reply_to", "attributes")
REQUIRED_FIELDS = tuple(name for name, info in EventIn.model_fields.items() if info.is_required())
MAX_HEADER_SHOWN = 400


class ImportStopped(FatigueError):
    """The import stopped before the end (Kafka down for too long, or interrupted); resume it."""

    retriable = True
    operator_action = "Run the same command again with --resume (the checkpoint says where it stopped)."


class MissingColumns(ConfigError):
    """A CSV header has no column for a required contract field: every row would be refused."""

    operator_action = ("Name the columns with --map FIELD=COLUMN (or give a constant with --set FIELD=VALUE), "
                       "or fix the header row (docs/import.md).")


# ---- column mapping (pure) ----


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds which contract field, value maps per field, and constant fields.

    Empty: rows are taken as they are (contract field names as columns or keys). Otherwise each
    contract field comes from its column (or the column of the same name), values are mapped
    (`values: {channel: {Call: phone}}`), constants fill fields no column has, and other columns
    are left out."""

    columns: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.columns or self.values or self.constants)

    def missing(self, header: list[str]) -> list[str]:
        """The required contract fields no column of `header` (nor a constant) provides, each with
        the column it was looked for in when that is another name."""
        absent = []
        for name in REQUIRED_FIELDS:
            column = self.columns.get(name, name)
            if name not in self.constants and column not in header:
                absent.append(name if column == name else f"{name} (column {column!r})")
        return absent

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.empty:
            return row
        out: dict[str, Any] = dict(self.constants)
        for name in CONTRACT_FIELDS:
            column = self.columns.get(name, name)
            if column in row:
                out[name] = row[column]
        for name, mapping in self.values.items():
            if isinstance(out.get(name), str) and out[name] in mapping:
                out[name] = mapping[out[name]]
        return out


def _check_fields(names: list[str], what: str) -> None:
    unknown = sorted(set(names) - set(CONTRACT_FIELDS))
    if unknown:
        raise ConfigError(f"{what}: unknown contract fields {unknown}; known: {', '.join(CONTRACT_FIELDS)}")


def column_map(pairs: list[str], values: list[str], constants: list[str], mapping_file: Path | None) -> ColumnMap:
    """From `--map FIELD=COLUMN`, `--value FIELD:FROM=TO`, `--set FIELD=VALUE` and a mapping file
    (YAML: columns / values / constants); flags win over the file."""
    loaded: dict[str, Any] = {}
    if mapping_file is not None:
        try:
            loaded = yaml.safe_load(mapping_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--mapping {mapping_file}: {exc}") from exc
        if not isinstance(loaded, dict) or set(loaded) - {"columns", "values", "constants"}:
            raise ConfigError(f"--mapping {mapping_file}: expected keys columns, values, constants")
    columns = {str(k): str(v) for k, v in (loaded.get("columns") or {}).items()}
    value_maps = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in (loaded.get("values") or {}).items()}
    fixed = {str(k): str(v) for k, v in (loaded.get("constants") or {}).items()}
    columns.update(_pairs(pairs, "--map FIELD=COLUMN"))
    fixed.update(_pairs(constants, "--set FIELD=VALUE"))
    for item in values:
        name, sep, rest = item.partition(":")
        source, eq, target = rest.partition("=")
        if not sep or not eq:
            raise ConfigError(f"--value {item!r}: expected FIELD:FROM=TO, e.g. channel:Call=phone")
        value_maps.setdefault(name, {})[source] = target
    for what, names in (("columns", columns), ("values", value_maps), ("constants", fixed)):
        _check_fields(list(names), what)
    return ColumnMap(columns, value_maps, fixed)


def _pairs(items: list[str], form: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected {form}")
        out[key.strip()] = value.strip()
    return out


# ---- checkpoint ----


@dataclass
class Counts:
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    """Valid events the event log refused for their own properties (too large): in the report, not retried."""


@dataclass
class Checkpoint:
    """Per file, the last row stored (acknowledged); the counts so far. Written atomically."""

    producer: str
    files: dict[str, int] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)

    def save(self, path: Path) -> None:
        body = {"v": CHECKPOINT_VERSION, "producer": self.producer, "files": self.files, "done": self.done,
                "counts": asdict(self.counts)}
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, producer: str) -> Checkpoint:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            checkpoint = cls(producer=str(body["producer"]), files={str(k): int(v) for k, v in body["files"].items()},
                             done=[str(d) for d in body.get("done", [])], counts=Counts(**body["counts"]))
        except FileNotFoundError:
            return cls(producer=producer)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"checkpoint {path} is unreadable ({exc}); remove it to start over") from exc
        if checkpoint.producer != producer:
            raise ConfigError(f"checkpoint {path} was written for producer {checkpoint.producer!r}, not {producer!r}")
        return checkpoint


# ---- the run ----


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...
    def close(self) -> Any: ...


@dataclass
class ImportJob:
    files: list[Path]
    producer: str
    columns: ColumnMap = field(default_factory=ColumnMap)
    fmt: str | None = None
    batch_size: int = 500
    rate_per_s: float | None = None
    dry_run: bool = False
    checkpoint_path: Path | None = None
    resume: bool = False
    report_path: Path | None = None
    max_future_skew_s: float = 300.0


def file_format(path: Path, forced: str | None) -> str:
    fmt = forced or format_of(path)
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the name; use .csv, .jsonl (also .gz) or --format")
    return fmt


def count_rows(files: list[Path], forced: str | None) -> int:
    """Data rows in the files (non-blank lines; less the header for CSV): the progress bar's total.
    A file that cannot be read to its end counts the lines read (the import reports it)."""
    total = 0
    for path in files:
        found = 0
        try:
            found = count_lines(path)
        except FileUnreadable as exc:
            found = exc.line
        total += max(0, found - (1 if file_format(path, forced) == "csv" else 0))
    return total


def check_header(path: Path, header: list[str], columns: ColumnMap) -> None:
    """MissingColumns naming the required fields no column provides, and showing the header."""
    absent = columns.missing(header)
    if absent:
        shown = ", ".join(header)
        shown = shown if len(shown) <= MAX_HEADER_SHOWN else shown[:MAX_HEADER_SHOWN] + "…"
        raise MissingColumns(f"{path}: the header has no column for {', '.join(absent)} (required); "
                             f"the header is: {shown}")


def check_headers(files: list[Path], forced: str | None, columns: ColumnMap) -> None:
    """Every CSV file's header against the mapping, before anything is stored."""
    for path in files:
        if file_format(path, forced) == "csv":
            for _ in rows(path, "csv", on_header=functools.partial(check_header, path, columns=columns)):
                break


class Importer:
    """Runs an ImportJob; `accept` is None for a dry run."""

    def __init__(self, job: ImportJob, accept: AcceptPath | None, progress: Progress,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._job = job
        self._accept = accept
        self._progress = progress
        self._clock = clock
        self._checkpoint = Checkpoint(producer=job.producer)
        self._stored_since_start = 0
        self._started = clock()
        self._report: Any = None
        self.positions: dict[int, int] = {}
        """partition -> the highest offset of the events topic this run's events reached (for the alerts
        they caused: fatigue/import_alerts.py)."""
        self.unreadable: list[FileUnreadable] = []
        """Files that could not be read to their end (each is also a row of the report)."""
        self.checkpoint_saved = False
        """Whether this run wrote the checkpoint (so `--resume` has something to resume)."""

    @property
    def counts(self) -> Counts:
        return self._checkpoint.counts

    async def run(self, report: IO[str]) -> Counts:
        job = self._job
        if job.resume and job.checkpoint_path is not None:
            self._checkpoint = Checkpoint.load(job.checkpoint_path, job.producer)
        check_headers([p for p in job.files if str(p.resolve()) not in self._checkpoint.done], job.fmt, job.columns)
        writer = self._report = csv.writer(report)
        if report.tell() == 0:
            writer.writerow(["file", "row", "field", "reason"])
        for path in job.files:
            key = str(path.resolve())
            if key in self._checkpoint.done:
                continue
            if await self._import_file(path, key, writer):
                self._checkpoint.done.append(key)
                self._save()
        return self.counts

    async def _import_file(self, path: Path, key: str, writer: Any) -> bool:
        """Store the file's valid rows; False when it could not be read to its end (reported)."""
        skip_through = self._checkpoint.files.get(key, 0)
        fmt = file_format(path, self._job.fmt)
        batch: list[EventIn] = []
        last_line = skip_through
        try:
            for line, raw in rows(path, fmt):
                if line <= skip_through:
                    self._progress.update()
                    continue
                event = self._check(path, line, raw, writer)
                last_line = line
                if event is not None:
                    batch.append(event)
                if len(batch) >= self._job.batch_size:
                    await self._store(batch, key, last_line)
                    batch = []
        except FileUnreadable as exc:
            await self._store(batch, key, last_line)  # the rows read before are good
            writer.writerow([str(path), exc.line + 1, "(file)", exc.reason])
            self.unreadable.append(exc)
            return False
        await self._store(batch, key, last_line)
        return True

    def _check(self, path: Path, line: int, raw: Any, writer: Any) -> EventIn | None:
        self.counts.rows += 1
        self._progress.update()
        if isinstance(raw, str):
            self._invalid(writer, path, line, [("(row)", raw)])
            return None
        checked = check_events([self._job.columns.apply(raw)], now=datetime.now(UTC),
                               max_future_skew_s=self._job.max_future_skew_s)
        if checked.rejected:
            rejection = checked.rejected[0]
            self._invalid(writer, path, line, list(rejection.problems) or [("(row)", rejection.error)])
            return None
        self.counts.valid += 1
        return checked.valid[0][1]

    def _invalid(self, writer: Any, path: Path, line: int, problems: list[tuple[str, str]]) -> None:
        self.counts.invalid += 1
        for name, reason in problems:
            writer.writerow([str(path), line, name, reason])

    async def _store(self, batch: list[EventIn], key: str, last_line: int) -> None:
        if self._accept is not None and batch:
            await self._throttle(len(batch))
            stored = await self._accept_with_retry(batch)
            for partition, offset in stored.positions.items():
                self.positions[partition] = max(offset, self.positions.get(partition, -1))
            self.counts.accepted += stored.count
            self.counts.duplicates += stored.duplicates
            self._refused(key, stored.refused)
            self._stored_since_start += len(batch)
        self._checkpoint.files[key] = last_line
        self._save()
        self._progress.set_postfix_str(f"stored {self.counts.accepted}, dup {self.counts.duplicates}, "
                                       f"invalid {self.counts.invalid}", refresh=False)

    def _refused(self, file_key: str, refused: list[tuple[EventIn, RecordRefused]]) -> None:
        """Events the event log refused (too large): one report row each, counted, never retried."""
        self.counts.refused += len(refused)
        for event, error in refused:
            self._report.writerow([file_key, "", "(event)", f"event_id {event.event_id}: not stored: {error}"])

    async def _accept_with_retry(self, batch: list[EventIn]) -> Accepted:
        """Only outages are retried (a minute); a refused event is in the result; BrokerMisconfigured stops."""
        assert self._accept is not None
        for attempt in range(60):
            try:
                return await self._accept.accept(batch, producer=self._job.producer, received_at=datetime.now(UTC))
            except (BrokerUnavailable, EventsInFlight) as exc:
                if attempt == 59:
                    raise ImportStopped(f"the batch was not stored after {attempt + 1} tries: {exc}") from exc
                await asyncio.sleep(RETRY_S)
        raise AssertionError("unreachable")

    async def _throttle(self, upcoming: int) -> None:
        rate = self._job.rate_per_s
        if not rate:
            return
        due = self._started + (self._stored_since_start + upcoming) / rate
        wait = due - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def _save(self) -> None:
        if self._job.checkpoint_path is not None and not self._job.dry_run:
            self._checkpoint.save(self._job.checkpoint_path)
            self.checkpoint_saved = True


def iter_paths(files: list[Path]) -> Iterator[Path]:
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        yield path
