"""CRM activities (calls, meetings, visits, emails logged by reps): a generic JSON adapter driven
by a mapping file. Shipped mappings: ingest/adapters/mappings/*.yaml; more from
FATIGUE_CRM_MAPPINGS_DIR. The format (docs/adapters.md#crm-activities):

    name: salesforce-task                 # the URL: POST /v1/adapters/crm/salesforce-task
    records: records                      # optional: where the list of records is in the body
    when:                                 # optional: records failing any condition are ignored (counted)
      - {path: Status, in: [Completed]}
    fields:                               # contract field -> rule
      event_id: {path: Id, prefix: "task:"}
      customer_id: {path: WhoId}
      email: {path: Who.Email}            # identity map fallback when customer_id is absent
      type: {value: touch}
      channel: {path: [TaskSubtype, Type], map: {Call: phone, Email: email}, default: other}
      occurred_at: {path: [CompletedDateTime, CreatedDate], format: datetime}
    attributes: {subject: Subject}        # attribute name -> path (kept on the event)

A rule takes the first present `path` (dotted, `a.b[0]` or `a.b.0` for list items; a list of
paths = alternatives), or the constant `value`; then `map` (exact, then case-insensitive), else
`default`; then `format` (text, datetime, date, epoch_ms, epoch_s) and `prefix`. What comes out is
validated by the contract like any other event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.adapters.common import MAX_SOURCE_CHARS, Candidate, Mapped, at_most, text
from ingest.identity import normalise_email, normalise_phone
from ingest.validation import describe_errors
from services.errors import ConfigError

SHIPPED_DIR = Path(__file__).parent / "mappings"
CONTRACT_FIELDS = ("event_id", "customer_id", "type", "channel", "kind", "occurred_at", "rep_id", "campaign_id",
                   "in_reply_to")
_SEGMENT = re.compile(r"^([^\[\]]*)((?:\[\d+\])*)$")
_OFFSET_WITHOUT_COLON = re.compile(r"([+-]\d{2})(\d{2})$")

Format = Literal["text", "datetime", "date", "epoch_ms", "epoch_s"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | list[str] | None = None
    value: str | None = None
    map: dict[str, str] | None = None
    default: str | None = None
    format: Format = "text"
    prefix: str = ""

    @property
    def paths(self) -> list[str]:
        return [] if self.path is None else [self.path] if isinstance(self.path, str) else self.path


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None


class Mapping(BaseModel):
    """One mapping file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str = ""
    records: str | None = None
    when: list[Condition] = []
    fields: dict[str, Rule]
    attributes: dict[str, str] = {}

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        unknown = sorted(set(value) - set(CONTRACT_FIELDS) - {"email", "phone"})
        if unknown:
            raise ValueError(f"unknown fields {unknown}: use {', '.join(CONTRACT_FIELDS)}, email, phone")
        for required in ("event_id", "type", "channel", "occurred_at"):
            if required not in value:
                raise ValueError(f"fields.{required} is required")
        if "customer_id" not in value and "email" not in value and "phone" not in value:
            raise ValueError("fields needs customer_id, or email / phone for the identity map")
        return value


def load_mappings(extra_dir: Path | None = None) -> dict[str, Mapping]:
    """The shipped mappings and those in `extra_dir` (same name: the extra one wins); ConfigError
    naming the file and the problem when one is invalid."""
    mappings: dict[str, Mapping] = {}
    files = sorted(SHIPPED_DIR.glob("*.yaml"))
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise ConfigError(f"FATIGUE_CRM_MAPPINGS_DIR={extra_dir}: not a directory")
        files += sorted(extra_dir.glob("*.yaml"))
    for path in files:
        mapping = load_mapping(path)
        mappings[mapping.name] = mapping
    return mappings


def load_mapping(path: Path) -> Mapping:
    try:
        return Mapping.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"CRM mapping {path}: cannot read it: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"CRM mapping {path}: {describe_errors(exc.errors())}") from exc


# ---- applying a mapping (pure) ----


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (`a.b[0].c` or `a.b.0.c`), None when any step is missing."""
    current = data
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if match is None:
            return None
        name, indexes = match.groups()
        steps: list[str | int] = [name] if name else []
        steps += [int(i) for i in re.findall(r"\d+", indexes)]
        for step in steps:
            current = _step(current, step)
            if current is None:
                return None
    return current


def _step(current: Any, step: str | int) -> Any:
    if isinstance(current, dict):
        return current.get(step if isinstance(step, str) else str(step))
    if isinstance(current, list):
        index = step if isinstance(step, int) else int(step) if step.isdigit() else None
        return current[index] if index is not None and 0 <= index < len(current) else None
    return None


def apply_rule(rule: Rule, record: Any) -> str | None:
    raw: Any = rule.value
    for path in rule.paths:
        found = lookup(record, path)
        if found is not None and found != "":
            raw = found
            break
    value = _mapped(rule, text(raw))
    if value is None:
        return None
    formatted = _formatted(value, rule.format)
    return None if formatted is None else rule.prefix + formatted


def _mapped(rule: Rule, value: str | None) -> str | None:
    if rule.map is None or value is None:
        return value if value is not None else rule.default
    if value in rule.map:
        return rule.map[value]
    folded = {k.casefold(): v for k, v in rule.map.items()}
    return folded.get(value.casefold(), rule.default)


def _formatted(value: str, fmt: Format) -> str | None:
    """The value in the contract's form; what cannot be read is passed on for the contract to name."""
    try:
        if fmt == "epoch_ms":
            return datetime.fromtimestamp(float(value) / 1000, UTC).isoformat()
        if fmt == "epoch_s":
            return datetime.fromtimestamp(float(value), UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return value
    if fmt == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{value}T00:00:00Z"
    if fmt == "datetime":
        return _OFFSET_WITHOUT_COLON.sub(r"\1:\2", value)  # Salesforce writes +0000
    return value


def holds(condition: Condition, record: Any) -> bool:
    value = text(lookup(record, condition.path))
    if condition.in_ is not None and value not in condition.in_:
        return False
    return not (condition.not_in is not None and value in condition.not_in)


def records_of(mapping: Mapping, body: Any) -> list[Any]:
    """Every record of a CRM payload: the list at `mapping.records`, else the body itself (a list,
    or a single record)."""
    found = lookup(body, mapping.records) if mapping.records and isinstance(body, dict) else None
    found = body if found is None else found  # a single record (or a bare list) is taken as it is
    return found if isinstance(found, list) else [found] if found is not None else []


def map_records(mapping: Mapping, body: Any, default_region: str | None = None, *,
                max_records: int | None = None) -> Mapped:
    """Contract events for the records of a CRM payload, by the mapping: every record is a
    candidate or ignored (with its index and why). More than `max_records`: TooManyRecords."""
    mapped = Mapped()
    for index, record in enumerate(at_most(records_of(mapping, body), max_records)):
        if not isinstance(record, dict):
            mapped.ignored.append((index, "not a record object"))
            continue
        failed = next((c for c in mapping.when if not holds(c, record)), None)
        if failed is not None:
            mapped.ignored.append((index, f"{failed.path} is {text(lookup(record, failed.path))!r}"))
            continue
        candidate = _candidate(mapping, record, default_region)
        candidate.index = index
        mapped.candidates.append(candidate)
    return mapped


def _candidate(mapping: Mapping, record: dict[str, Any], default_region: str | None) -> Candidate:
    event: dict[str, Any] = {}
    for name in CONTRACT_FIELDS:
        rule = mapping.fields.get(name)
        value = None if rule is None else apply_rule(rule, record)
        if value is not None:
            event[name] = value
    attributes = {name: lookup(record, path) for name, path in mapping.attributes.items()}
    attributes = {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
    if attributes:
        event["attributes"] = attributes
    candidate = Candidate(event=event, source=_source(record))
    if "customer_id" not in event:
        candidate.identity = _identity(mapping, record, default_region)
    return candidate


def _identity(mapping: Mapping, record: dict[str, Any], default_region: str | None) -> Any:
    for name, normalise in (("email", normalise_email), ("phone", lambda t: normalise_phone(t, default_region))):
        rule = mapping.fields.get(name)
        value = None if rule is None else apply_rule(rule, record)
        if value:
            try:
                return normalise(value)
            except ValueError:
                continue
    return None


def _source(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if isinstance(v, str | int | float | bool) or v is None}
    return kept if len(repr(kept)) <= MAX_SOURCE_CHARS else {}
