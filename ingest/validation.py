"""Pure handling of a POST /v1/events body: parse, split into items, check each, describe errors.

No HTTP, Kafka or Redis here and the time comes in as `now`, so every rule is a table test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any

import orjson
from pydantic import ValidationError

from services.contract import EventIn, future_skew_problem

_SHOW_CHARS = 60
_MAX_MESSAGE_CHARS = 1000
_REQUEST_LOCATIONS = ("path", "query", "header", "cookie")
_IDENTIFIER_HINT = "may only contain letters, digits and . _ : @ + - (1-200 characters)"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
PARSER_MAX_DEPTH = 1024
"""The JSON parser (orjson) refuses deeper nesting itself, without recursing in Python."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


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
    problems: tuple[tuple[str, str], ...] = ()
    """(field, reason) of each problem; `error` is them in one line."""


class InvalidEvent(ValueError):
    """An item the contract refuses: the message names every field and reason; `problems` lists them."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass
class CheckedBatch:
    valid: list[tuple[int, EventIn]]
    rejected: list[Rejection]


def json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def json_depth(raw: bytes) -> int:
    """How deep objects and arrays nest in a JSON text, found without parsing it (so without
    recursion): brackets inside strings are ignored. Linear in the size of the text."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def too_deep(depth: int, max_depth: int) -> BodyRefused:
    return BodyRefused(
        400, "json_too_deep", f"request body nests objects/arrays {depth} levels deep; at most {max_depth} allowed"
    )


def parse_json(raw: bytes, *, max_depth: int = PARSER_MAX_DEPTH) -> Any:
    """Decode a request body; BodyRefused(400) says what is wrong and where.

    Strict JSON (RFC 8259): UTF-8 only, no NaN/Infinity, no lone surrogates, numbers that fit a
    double, nesting at most `max_depth` deep (checked before parsing when lower than the parser's
    own limit). Nothing here recurses in Python, whatever the input."""
    if not raw.strip():
        raise BodyRefused(400, "invalid_json", "request body is empty; send one event object or an array")
    if max_depth < PARSER_MAX_DEPTH and (depth := json_depth(raw)) > max_depth:
        raise too_deep(depth, max_depth)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit exceeded"):
            raise too_deep(PARSER_MAX_DEPTH + 1, PARSER_MAX_DEPTH) from exc
        reason = exc.msg.replace("str is not valid UTF-8", "not valid UTF-8")
        for constant in ("NaN", "-Infinity", "Infinity"):
            if raw[exc.pos : exc.pos + len(constant)] == constant.encode():
                reason = f"{constant} is not valid JSON (numbers must be finite)"
        where = f"line {exc.lineno}, column {exc.colno} (character {exc.pos})"
        raise BodyRefused(400, "invalid_json", f"request body is not valid JSON: {reason} at {where}") from exc


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
        errors = exc.errors()
        raise InvalidEvent(describe_errors(errors), field_problems(errors)) from exc
    reason = future_skew_problem(event.occurred_at, now, max_future_skew_s)
    if reason is not None:
        raise InvalidEvent(f"occurred_at: {reason}", [("occurred_at", reason)])
    return event


def check_events(items: Sequence[Any], *, now: datetime, max_future_skew_s: float) -> CheckedBatch:
    batch = CheckedBatch(valid=[], rejected=[])
    for index, item in enumerate(items):
        try:
            batch.valid.append((index, check_event(item, now=now, max_future_skew_s=max_future_skew_s)))
        except ValueError as exc:
            problems = exc.problems if isinstance(exc, InvalidEvent) else ()
            batch.rejected.append(Rejection(index, str(exc), problems))
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


def field_problems(errors: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(field path, reason) per field of a list of pydantic errors ("(event)" for the whole item)."""
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        by_path.setdefault(format_loc(err.get("loc", ())), []).append(err)
    problems = []
    for path, errs in by_path.items():
        described = _describe_field(path, errs)
        problems.append((path or "(event)", described.removeprefix(f"{path}: ") if path else described))
    return problems


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
    if isinstance(value, str):
        text = repr(value[: _SHOW_CHARS * 2])
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (RecursionError, ValueError):
            text = f"<{json_type(value)}>"
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 1] + "…"
