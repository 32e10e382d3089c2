"""The event contract's bounds: what an intake accepts is exactly what the core can run."""

from __future__ import annotations

import json
import math
from datetime import UTC
from typing import Any

import pytest
from pydantic import ValidationError

from services.contract import (
    MAX_ATTRIBUTES_DEPTH,
    MAX_ATTRIBUTES_VALUES,
    EventEnvelope,
    EventIn,
    ProfileEnvelope,
    ProfileIn,
)


def event(**overrides: Any) -> dict[str, Any]:
    base = {"event_id": "e1", "type": "touch", "customer_id": "c1", "channel": "email",
            "occurred_at": "2026-11-23T09:00:00Z"}
    base.update(overrides)
    return base


def refusal(model: type, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    [error] = caught.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def nested(depth: int) -> dict[str, Any]:
    """An attributes object with `depth` levels of objects inside it."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


OUT_OF_RANGE = [
    "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC: used to crash the scorer
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:30:00+01:00",  # 1969 in UTC
    "2200-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",  # year 10000 once in UTC
]
IN_RANGE = ["1970-01-01T00:00:00Z", "1970-01-01T01:00:00+01:00", "2199-12-31T23:59:59.999Z"]
NON_JSON_NUMBERS = [
    (math.nan, "not a finite number"),
    (math.inf, "not a finite number"),
    (-math.inf, "not a finite number"),
    (2**53, "safe integer range"),
    (-(2**63), "safe integer range"),
]
BAD_TIME_ZONES = ["America", "Europe/", "../../../etc/passwd", "/etc/localtime", "", "America/New_York\x00",
                  "Mars/Olympus", "asia/shanghai"]
GOOD_TIME_ZONES = ["Asia/Shanghai", "America/New_York", "UTC", "Europe/Berlin"]
LEAP_SECONDS = [
    ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),  # the last leap second (IERS)
    ("2016-12-31T23:59:60.250Z", "2016-12-31T23:59:59.999999+00:00"),
    ("2017-01-01T07:59:60+08:00", "2016-12-31T23:59:59.999999+00:00"),  # the same second in Shanghai
]
"""The cases above are also run through the scorer's fast decoder (tests/scorer/test_decoding.py)."""


@pytest.mark.parametrize("occurred_at", OUT_OF_RANGE)
def test_moments_outside_the_supported_range_are_refused(occurred_at: str) -> None:
    assert "outside the supported range" in refusal(EventIn, event(occurred_at=occurred_at))


@pytest.mark.parametrize("occurred_at", IN_RANGE)
def test_the_range_is_judged_after_the_offset(occurred_at: str) -> None:
    assert EventIn.model_validate(event(occurred_at=occurred_at)).occurred_at_ms >= 0


def test_attributes_nesting_is_bounded() -> None:
    assert EventIn.model_validate(event(attributes=nested(MAX_ATTRIBUTES_DEPTH))).attributes
    message = refusal(EventIn, event(attributes=nested(MAX_ATTRIBUTES_DEPTH + 1)))
    assert message.startswith("attributes:") and f"deeper than {MAX_ATTRIBUTES_DEPTH} levels" in message


def test_hostile_nesting_is_refused_without_recursing() -> None:
    deep: Any = 1
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep]
    assert "deeper than" in refusal(EventIn, event(attributes={"x": deep}))


def test_attributes_value_count_is_bounded() -> None:
    assert "more than" in refusal(EventIn, event(attributes={f"k{i}": i for i in range(MAX_ATTRIBUTES_VALUES + 1)}))
    assert "more than" in refusal(EventIn, event(attributes={"list": list(range(MAX_ATTRIBUTES_VALUES))}))


@pytest.mark.parametrize(("value", "reason"), NON_JSON_NUMBERS)
def test_numbers_the_json_world_cannot_carry_are_refused(value: float, reason: str) -> None:
    message = refusal(EventIn, event(attributes={"n": {"deep": [value]}}))
    assert "n.deep[0]" in message and reason in message


@pytest.mark.parametrize("timezone", BAD_TIME_ZONES)
def test_time_zones_must_be_iana_names(timezone: str) -> None:
    assert "not an IANA time zone" in refusal(ProfileIn, {"timezone": timezone})


@pytest.mark.parametrize("timezone", GOOD_TIME_ZONES)
def test_iana_time_zones_are_accepted(timezone: str) -> None:
    assert ProfileIn.model_validate({"timezone": timezone}).timezone == timezone


def test_the_envelope_is_bounded_like_the_event() -> None:
    body = {"producer": "p", "received_at": "0001-01-01T00:00:00+00:00", "event": event()}
    assert "outside the supported range" in refusal(EventEnvelope, body)


@pytest.mark.parametrize(("text", "utc"), LEAP_SECONDS)
def test_a_leap_second_is_accepted_as_the_last_instant_of_its_minute(text: str, utc: str) -> None:
    """RFC 3339 section 5.6 allows time-second 60; Python cannot hold it, so it becomes 59.999999,
    which keeps the order of events around it."""
    moment = EventIn.model_validate(event(occurred_at=text)).occurred_at
    assert moment.astimezone(UTC).isoformat() == utc


def test_a_second_beyond_60_is_refused_naming_the_field() -> None:
    assert refusal(EventIn, event(occurred_at="2016-12-31T23:59:61Z")).startswith("occurred_at:")


@pytest.mark.parametrize(("model", "body"), [
    (EventEnvelope, {"producer": "p", "event": event()}),
    (ProfileEnvelope, {"customer_id": "c1", "profile": {}}),
])
@pytest.mark.parametrize("moment", ["2026-11-23T09:00:00", "2026-11-23", "2026-11-23T09:00:00.5"])
def test_an_envelope_moment_without_an_offset_is_refused_naming_the_field(model: type, body: dict[str, Any],
                                                                          moment: str) -> None:
    """pydantic reads these as naive datetimes; comparing one with the range raised TypeError, which
    escaped validation: the scorer's agent died on such a record, and again on it after each restart."""
    field = "received_at" if model is EventEnvelope else "updated_at"
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps({**body, field: moment}))
    [error] = caught.value.errors()
    assert error["loc"] == (field,) and "no UTC offset" in error["msg"]
