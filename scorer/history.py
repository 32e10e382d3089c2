"""Reading a history of events and profiles from files, and the contract -> core event mapping.

Events: JSONL (one contract-v1 event per line, blank lines ignored) or CSV (a header of contract
field names, `attributes` as a JSON string, empty cells absent), read by services/history_rows.py
(shared with `fatigue import`), each optionally with `received_at` (RFC 3339: when the live
scorer received it; the backtest replays it then). Profiles: the same formats, rows of
`customer_id` + the profile fields (docs/events.md) and an optional `updated_at`. Every row is
validated with the contract models the API uses, and an event dated more than the default future
skew ahead of `now` is refused as every intake and `fatigue import` refuse it
(`services.contract.future_skew_problem`); an invalid row raises `InvalidRow` naming the file,
line, field and reason — or, with `skip_invalid`, is counted and reported instead.

`contact_event` is the one mapping from a validated event to the core's `ContactEvent`: the live
processor (scorer/processor.py) and the backtest both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError, field_validator

from scorer.core.state import ContactEvent
from services.contract import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    EventIn,
    Identifier,
    ProfileIn,
    future_skew_problem,
    parse_moment,
    to_ms,
)
from services.errors import FatigueError
from services.history_rows import FileUnreadable, rows

FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}

M = TypeVar("M", bound=BaseModel)


class InvalidHistory(FatigueError):
    """A history file cannot be read or its format is unknown. Not retriable."""

    operator_action = "Check the file named in the message: its path, and its format (.jsonl or .csv, or --format)."


class InvalidRow(InvalidHistory):
    """A row of a history file is not a valid event or profile."""

    operator_action = "Fix the row named in the message, or pass --skip-invalid to count and skip invalid rows."


def contact_event(event: EventIn, producer: str) -> ContactEvent:
    """A validated contract event in the core's units (event ids are unique per producer)."""
    return ContactEvent(
        event_id=event.event_id,
        type=str(event.type),
        customer_id=event.customer_id,
        channel=str(event.channel),
        occurred_at_ms=event.occurred_at_ms,
        kind=None if event.kind is None else str(event.kind),
        in_reply_to=event.in_reply_to,
        rep_id=event.rep_id,
        campaign_id=event.campaign_id,
        producer=producer,
    )


class EventRow(EventIn):
    """An event row of a history file: the contract event, and optionally when it was received."""

    received_at: datetime | None = None

    @field_validator("received_at", mode="before")
    @classmethod
    def _received_rfc3339(cls, value: Any) -> datetime | None:
        return None if value is None else parse_moment(value)

    @property
    def received_at_ms(self) -> int | None:
        return None if self.received_at is None else to_ms(self.received_at)


class ProfileRow(ProfileIn):
    """A profile row of a history file: whose profile, and optionally since when."""

    customer_id: Identifier
    updated_at: datetime | None = None

    @field_validator("updated_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> datetime | None:
        return None if value is None else parse_moment(value)

    def profile(self) -> dict[str, Any]:
        """The profile as the scorer holds it (what `ProfileEnvelope.profile` decodes to)."""
        return self.model_dump(exclude={"customer_id", "updated_at"}, exclude_none=True, mode="json")

    @property
    def updated_at_ms(self) -> int | None:
        return None if self.updated_at is None else to_ms(self.updated_at)


@dataclass(frozen=True)
class Row(Generic[M]):
    line: int
    value: M


@dataclass
class Loaded(Generic[M]):
    """The valid rows of a file, in file order, and the invalid ones skipped (`file:line: reason`)."""

    rows: list[Row[M]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def detect_format(path: Path, forced: str | None = None) -> str:
    if forced:
        return forced
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidHistory(f"{path}: cannot tell the format from the extension {path.suffix!r}; "
                             f"name it .jsonl or .csv, or pass --format jsonl|csv")
    return fmt


def load_events(path: Path, fmt: str | None = None, *, skip_invalid: bool = False,
                now: datetime | None = None) -> Loaded[EventRow]:
    """The file's events; one dated more than the default future skew after `now` (default: the
    wall clock) is invalid, as at every intake."""
    return _load(path, detect_format(path, fmt), EventRow, skip_invalid, _dated_ahead_of(now or datetime.now(UTC)))


def load_profiles(path: Path, fmt: str | None = None, *, skip_invalid: bool = False) -> Loaded[ProfileRow]:
    return _load(path, detect_format(path, fmt), ProfileRow, skip_invalid)


def _load(path: Path, fmt: str, model: type[M], skip_invalid: bool,
          refuse: Callable[[M], str | None] | None = None) -> Loaded[M]:
    loaded: Loaded[M] = Loaded()
    try:
        for line, data in rows(path, fmt):
            try:
                loaded.rows.append(Row(line, _validate(model, data, refuse)))
            except ValueError as exc:
                problem = f"{path}:{line}: {exc}"
                if not skip_invalid:
                    raise InvalidRow(problem) from None
                loaded.skipped.append(problem)
    except FileUnreadable as exc:
        where = f" past line {exc.line}" if exc.line else ""
        raise InvalidHistory(f"cannot read {path}{where}: {exc.reason}") from None
    return loaded


def _validate(model: type[M], data: dict[str, Any] | str, refuse: Callable[[M], str | None] | None = None) -> M:
    """The row as a model; ValueError with `field: reason` for every problem."""
    if isinstance(data, str):
        raise ValueError(data)
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(row)"
            problems.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from None
    problem = refuse(value) if refuse is not None else None
    if problem:
        raise ValueError(problem)
    return value


def _dated_ahead_of(now: datetime) -> Callable[[EventRow], str | None]:
    """`occurred_at: reason` for an event row dated too far after `now` (the intakes' rule)."""
    def problem(row: EventRow) -> str | None:
        reason = future_skew_problem(row.occurred_at, now, DEFAULT_MAX_FUTURE_SKEW_S)
        return None if reason is None else f"occurred_at: {reason}"
    return problem
