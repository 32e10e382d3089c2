"""Pure handling of a POST /v1/events body: parse, split into items, check each, describe errors.

No HTTP, Kafka or Redis here and the time comes in as `now`, so every rule is a table test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.contract import EventIn

_SHOW_CHARS = 60
_MAX_MESSAGE_CHARS = 1000
_REQUEST_LOCATIONS = ("path", "query", "header", "cookie")
_IDENTIFIER_HINT = "may only contain letters, digits and . _ : @ + - (1-200 characters)"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


class BodyRefused(ValueError):
    """The request body as a whole cannot be processed (the answer is `status`, nothing is stored)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Rejection:
    index: int
    error: str


@dataclass
class CheckedBatch:
    valid: list[tuple[int, EventIn]]
    rejected: list[Rejection]


def json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Decode a request body; BodyRefused(400) says what is wrong and where."""
    if not raw.strip():
        raise BodyRefused(400, "invalid_json", "request body is empty; send one event object or an array")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise BodyRefused(400, "invalid_json", f"request body is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno} (character {exc.pos})"
        raise BodyRefused(400, "invalid_json", f"request body is not valid JSON: {exc.msg} at {where}") from exc
    except ValueError as exc:
        raise BodyRefused(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc


def split_batch(payload: Any, max_items: int) -> list[Any]:
    """One event object or a non-empty array of at most `max_items` items -> the list of items."""
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise BodyRefused(
            422, "invalid_body", f"body must be an event object or an array of events, not {json_type(payload)}"
        )
    if not payload:
        raise BodyRefused(422, "invalid_body", "body is an empty array; send at least one event")
    if len(payload) > max_items:
        message = f"{len(payload)} events in one request; at most {max_items} allowed, split the batch"
        raise BodyRefused(413, "too_many_events", message)
    return payload


def check_event(item: Any, *, now: datetime, max_future_skew_s: float) -> EventIn:
    """Validate one item; ValueError with a `field: reason` message when it is refused."""
    try:
        event = EventIn.model_validate(item)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc.errors())) from exc
    ahead_s = (event.occurred_at - now).total_seconds()
    if ahead_s > max_future_skew_s:
        raise ValueError(
            f"occurred_at: {event.occurred_at.isoformat()} is {ahead_s:.0f}s in the future "
            f"(at most {max_future_skew_s:g}s allowed); check the sending system's clock"
        )
    return event


def check_events(items: Sequence[Any], *, now: datetime, max_future_skew_s: float) -> CheckedBatch:
    batch = CheckedBatch(valid=[], rejected=[])
    for index, item in enumerate(items):
        try:
            batch.valid.append((index, check_event(item, now=now, max_future_skew_s=max_future_skew_s)))
        except ValueError as exc:
            batch.rejected.append(Rejection(index, str(exc)))
    return batch


def first_occurrences(events: Sequence[EventIn]) -> tuple[list[EventIn], int]:
    """Keep the first event of each event_id; return them and how many repeats were dropped."""
    unique: dict[str, EventIn] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    return list(unique.values()), len(events) - len(unique)


# ---- error descriptions: "field.path: what is wrong (got ...)" ----


def describe_errors(errors: Sequence[Mapping[str, Any]], *, request_locations: bool = False) -> str:
    """One line for a list of pydantic errors; errors on the same field are merged."""
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        by_path.setdefault(format_loc(err.get("loc", ()), request_locations=request_locations), []).append(err)
    parts = [_describe_field(path, errs) for path, errs in by_path.items()]
    message = "; ".join(parts)
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 1] + "…"


def format_loc(loc: Sequence[Any], *, request_locations: bool = False) -> str:
    """('attributes', 'a', 0) -> 'attributes.a[0]'; pydantic's union-member tags are dropped."""
    parts = list(loc)
    where = ""
    if request_locations and parts and parts[0] == "body":
        parts = parts[1:] or ["body"]
    elif request_locations and parts and parts[0] in _REQUEST_LOCATIONS:
        where, parts = f" (in {parts[0]})", parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_union_tag(str(part)):
            text += f".{part}" if text else str(part)
    return text + where


def _is_union_tag(part: str) -> bool:
    return "[" in part and part.endswith("]")


def _describe_field(path: str, errs: list[Mapping[str, Any]]) -> str:
    if len(errs) > 1 and all(err["type"] in ("enum", "literal_error") for err in errs):
        choices = [c for err in errs for c in _choices(err)]
        reason = f"{_show(errs[0].get('input'))} is not one of {', '.join(dict.fromkeys(choices))}"
    else:
        reason = "; ".join(dict.fromkeys(_reason(err) for err in errs))
    if not path:
        return f"event {reason}" if reason.startswith("must") else reason
    return f"{path}: {reason}"


def _choices(err: Mapping[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))


def _reason(err: Mapping[str, Any]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in ("enum", "literal_error"):
        return f"{_show(value)} is not one of {', '.join(_choices(err))}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if isinstance(value, bytes):
            return "must be a JSON object sent with Content-Type: application/json"
        return f"must be a JSON object, not {json_type(value)}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_pattern_mismatch":  # the only pattern in our models is contract.Identifier's
        return f"{_show(value)} {_IDENTIFIER_HINT}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{_should(err['msg'])}, not {json_type(value)} {_show(value)}"
    return f"{_should(err['msg'])} (got {_show(value)})"


def _should(msg: str) -> str:
    """Pydantic's "Input should be ..." / "List should have ..." -> "must be ..." / "must have ..."."""
    return re.sub(r"^(Input|String|List|Dictionary|Tuple|Set|Value) should", "must", msg).replace(
        " after validation", ""
    )


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 1] + "…"
