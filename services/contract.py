"""Event contract v1: the shape of touches, responses and profiles, validated on the way in.

Documented in docs/events.md. These models sit at the edges (HTTP in, Kafka out); the scorer's
pure core gets plain values from `to_core_fields` so it does not depend on pydantic.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_ATTRIBUTES_BYTES = 8 * 1024
MAX_ATTRIBUTES_DEPTH = 8
"""`attributes` is an object; objects and arrays inside it nest at most this many levels in all."""
MAX_ATTRIBUTES_VALUES = 512
"""Keys and array items in `attributes`, counted over every level."""
MAX_SAFE_INTEGER = 2**53 - 1
"""Integers beyond this lose precision in JavaScript and in JSON parsers that read floats."""

EARLIEST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(2200, 1, 1, tzinfo=UTC)
"""Every moment the contract accepts lies in [EARLIEST_MOMENT, LATEST_MOMENT) once normalised to UTC, so
any window, cool-off or rest the policy allows (at most a few years) stays inside what the core can
represent and format. Intakes refuse events further in the future than a small skew besides."""

DEFAULT_MAX_FUTURE_SKEW_S = 300.0
"""How far ahead of the receiving clock an event may be dated by default (FATIGUE_MAX_FUTURE_SKEW_S)."""


def future_skew_problem(occurred_at: datetime, now: datetime, max_future_skew_s: float) -> str | None:
    """Why an event dated `occurred_at` is refused at `now` — dated more than `max_future_skew_s`
    ahead — or None. The one future rule of every intake, the import and the backtest."""
    ahead_s = (occurred_at - now).total_seconds()
    if ahead_s <= max_future_skew_s:
        return None
    return (f"{occurred_at.isoformat()} is {ahead_s:.0f}s in the future "
            f"(at most {max_future_skew_s:g}s allowed); check the sending system's clock")


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+\-]+$"),
]
"""Ids travel in URL paths and Redis keys: letters, digits and . _ : @ + - only, 1-200 chars."""

FreeId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""Ids we only store and echo back (event ids, campaign ids): any non-empty string, 200 chars max."""


class EventType(StrEnum):
    TOUCH = "touch"
    RESPONSE = "response"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    WECHAT = "wechat"
    WECOM = "wecom"
    VISIT = "visit"
    MEETING = "meeting"
    PUSH = "push"
    CHAT = "chat"
    SOCIAL = "social"
    OTHER = "other"


class TouchKind(StrEnum):
    VALUE = "value"
    PROMO = "promo"
    SERVICE = "service"
    TRANSACTIONAL = "transactional"


class ResponseKind(StrEnum):
    REPLY = "reply"
    OPEN = "open"
    CLICK = "click"
    CALL_ANSWERED = "call_answered"
    MEETING_ATTENDED = "meeting_attended"
    UNSUBSCRIBE = "unsubscribe"
    COMPLAINT = "complaint"
    BOUNCE = "bounce"
    RESUBSCRIBE = "resubscribe"
    """The customer opted back in on the channel (e.g. SMS START): re-opens what an unsubscribe closed."""


class Tier(StrEnum):
    A = "A"
    B = "B"
    C = "C"


class Stage(StrEnum):
    LEAD = "lead"
    PROSPECT = "prospect"
    INTENT = "intent"
    NEGOTIATION = "negotiation"
    ONBOARDING = "onboarding"
    CUSTOMER = "customer"
    LOYAL = "loyal"


_LEAP_SECOND = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:)60(?:\.\d+)?([+-]\d{2}:\d{2})$")


def parse_rfc3339(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp that carries an explicit offset; anything else is refused."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 string with an offset, e.g. 2026-11-23T09:30:00+08:00")
    if not _RFC3339.match(value):
        raise ValueError(
            f"{value!r} is not RFC 3339 with an offset (e.g. 2026-11-23T09:30:00Z or ...+08:00)"
        )
    text = value.upper().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    leap = _LEAP_SECOND.match(text)
    if leap:  # RFC 3339 5.6/5.7 allows a leap second (:60); Python cannot hold it: its last microsecond
        text = f"{leap.group(1)}59.999999{leap.group(2)}"
    whole, _, frac_and_tz = text.partition(".")
    if frac_and_tz:  # Python accepts at most 6 fraction digits; keep microseconds.
        digits = re.match(r"\d+", frac_and_tz)
        assert digits is not None
        text = f"{whole}.{digits.group()[:6].ljust(6, '0')}{frac_and_tz[digits.end():]}"
    return datetime.fromisoformat(text)


def check_moment(moment: datetime) -> datetime:
    """`moment` when it carries an offset and is within the contract's range (after its offset is
    applied), else ValueError — never TypeError (a moment without an offset cannot be compared) nor
    OverflowError (an offset that takes it past year 1 or 9999), which pydantic would let escape."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset (e.g. 2026-11-23T09:30:00Z or ...+08:00)")
    try:
        inside = EARLIEST_MOMENT <= moment < LATEST_MOMENT
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError(
            f"{moment.isoformat()} is outside the supported range "
            f"{EARLIEST_MOMENT.date().isoformat()} to {LATEST_MOMENT.date().isoformat()} (UTC)"
        )
    return moment


def parse_moment(value: Any) -> datetime:
    """An RFC 3339 timestamp with an offset, within the contract's range; ValueError otherwise."""
    try:
        moment = parse_rfc3339(value)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError(f"{value!r} is outside the supported range (1970 to 2200, UTC)") from exc
    return check_moment(moment)


def check_attributes(value: dict[str, Any]) -> None:
    """Bound what `attributes` may hold, without recursion: nesting depth, number of values, finite
    numbers within the safe-integer range, string keys. ValueError names the path and the reason."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    values = 0
    while pending:
        item, path, depth = pending.pop()
        if not isinstance(item, dict | list):
            _check_scalar(item, path)
            continue
        if depth >= MAX_ATTRIBUTES_DEPTH:
            raise ValueError(f"{path or 'attributes'}: nested deeper than {MAX_ATTRIBUTES_DEPTH} levels")
        children = list(item.items()) if isinstance(item, dict) else [(f"[{i}]", v) for i, v in enumerate(item)]
        values += len(children)
        if values > MAX_ATTRIBUTES_VALUES:
            raise ValueError(f"holds more than {MAX_ATTRIBUTES_VALUES} keys and items in all")
        for key, child in children:
            if not isinstance(key, str):
                raise ValueError(f"{path or 'attributes'}: keys must be strings")
            pending.append((child, path + key if key.startswith("[") or not path else f"{path}.{key}", depth + 1))


def attributes_json_size(value: dict[str, Any]) -> int:
    """Bytes of `attributes` as compact UTF-8 JSON: what MAX_ATTRIBUTES_BYTES bounds."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _check_scalar(item: Any, path: str) -> None:
    if isinstance(item, bool | str) or item is None:
        return
    if isinstance(item, int):
        if abs(item) > MAX_SAFE_INTEGER:
            raise ValueError(f"{path}: {item} is beyond the safe integer range (±{MAX_SAFE_INTEGER})")
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"{path}: {item} is not a finite number")
    else:
        raise ValueError(f"{path}: {type(item).__name__} is not a JSON value")


@cache
def iana_time_zones() -> frozenset[str]:
    """The IANA time zone names this machine knows (system tzdata or the tzdata package)."""
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def check_time_zone(value: str) -> str:
    """`value` when it names an IANA time zone (e.g. Asia/Shanghai); ValueError otherwise.

    Checked against the list of known names, never by opening a path built from the input."""
    if value not in iana_time_zones():
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Asia/Shanghai, America/New_York, UTC)")
    return value


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    """The UTC moment of epoch milliseconds (None stays None): the inverse of `to_ms`."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


_KIND_VALUES: dict[type[StrEnum], frozenset[str]] = {kinds: frozenset(k.value for k in kinds)
                                                      for kinds in (TouchKind, ResponseKind)}
"""The values of each kind enum, computed once (not per validated event)."""


class EventIn(BaseModel):
    """One touch or response as upstream systems post it."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    event_id: FreeId
    type: EventType
    customer_id: Identifier
    channel: Channel
    occurred_at: datetime
    rep_id: FreeId | None = None
    campaign_id: FreeId | None = None
    kind: TouchKind | ResponseKind | None = None
    in_reply_to: FreeId | None = None
    attributes: dict[str, Any] | None = None

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> datetime:
        return parse_moment(value)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes_bounded(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_attributes(value)
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = attributes_json_size(value)
            if size > MAX_ATTRIBUTES_BYTES:
                raise ValueError(f"is {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} allowed")
        return value

    @model_validator(mode="after")
    def _kind_matches_type(self) -> EventIn:
        if self.in_reply_to is not None and self.type == EventType.TOUCH:
            raise ValueError("in_reply_to is only allowed on responses")
        if self.kind is None:
            return self
        allowed = TouchKind if self.type == EventType.TOUCH else ResponseKind
        if self.kind not in _KIND_VALUES[allowed]:
            names = ", ".join(k.value for k in allowed)
            raise ValueError(f"kind {self.kind!r} is not a {self.type} kind (one of: {names})")
        return self

    @property
    def occurred_at_ms(self) -> int:
        return to_ms(self.occurred_at)


MAX_IDENTITIES = 20
"""At most this many emails and this many phones per profile."""

Email = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=3, max_length=254,
                                         pattern=r"^[^@\s]+@[^@\s]+$")]
"""An email address as the identity map keeps it: trimmed, lower-cased, one @, no spaces."""

Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=32,
                                         pattern=r"^\+?[0-9][0-9 ().\-]*$")]
"""A phone number, E.164 (+8613800138000) or national; the API normalises it to E.164."""


class ProfileIn(BaseModel):
    """What the owner knows about a customer; every field optional, the whole profile replaces the old."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    tier: Tier | None = None
    stage: Stage | None = None
    timezone: str | None = Field(default=None, max_length=64)
    owner_rep_id: FreeId | None = None
    do_not_contact: bool = False
    emails: list[Email] | None = Field(default=None, max_length=MAX_IDENTITIES)
    """The customer's addresses, for the provider adapters' identity map (never sent to the scorer)."""
    phones: list[Phone] | None = Field(default=None, max_length=MAX_IDENTITIES)
    """The customer's phone numbers, likewise; absent = the stored ones stay, [] = remove them."""

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


# ---- Kafka envelopes (what actually travels on the topics) ----


class EventEnvelope(BaseModel):
    """A validated event as stored on the events topic."""

    v: Literal[1] = 1
    producer: str
    received_at: datetime
    event: EventIn

    @field_validator("received_at")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        return check_moment(value)


class ProfileEnvelope(BaseModel):
    """A profile as stored on the compacted profiles topic."""

    v: Literal[1] = 1
    customer_id: Identifier
    updated_at: datetime
    profile: ProfileIn

    @field_validator("updated_at")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        return check_moment(value)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()
