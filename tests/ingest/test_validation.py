"""The pure event-body rules: parsing, batch shape, per-item validation and its messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.validation import (
    BodyRefused,
    check_event,
    check_events,
    describe_errors,
    first_occurrences,
    format_loc,
    parse_json,
    split_batch,
)
from services.contract import EventIn

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
SKEW_S = 300.0


def item(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1",
        "type": "touch",
        "customer_id": "c1",
        "channel": "email",
        "occurred_at": "2026-11-23T09:00:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def check(value: object) -> EventIn:
    return check_event(value, now=NOW, max_future_skew_s=SKEW_S)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "request body is empty"),
        (b"   \n", "request body is empty"),
        (b"{not json", "line 1, column 2 (character 1)"),
        (b'[{"a": 1},\n {"b": 2]', "line 2, column"),
        (b"\xff\xfe\xfa", "not"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
    ],
)
def test_parse_json_refuses_with_position(raw: bytes, fragment: str) -> None:
    with pytest.raises(BodyRefused) as info:
        parse_json(raw)
    assert info.value.status == 400 and info.value.code == "invalid_json"
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ("just a string", 422, "not string"),
        (42, 422, "not number"),
        (None, 422, "not null"),
        ([], 422, "empty array"),
        ([{}] * 4, 413, "4 events in one request; at most 3 allowed"),
    ],
)
def test_split_batch_refuses_bad_shapes(payload: object, status: int, fragment: str) -> None:
    with pytest.raises(BodyRefused) as info:
        split_batch(payload, max_items=3)
    assert info.value.status == status
    assert fragment in info.value.message


def test_split_batch_accepts_one_object_or_an_array() -> None:
    assert split_batch({"a": 1}, max_items=3) == [{"a": 1}]
    assert split_batch([1, 2, 3], max_items=3) == [1, 2, 3]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (item(channel="fax"), "channel: 'fax' is not one of email, sms, phone"),
        (item(type="call"), "type: 'call' is not one of touch, response"),
        (item(event_id=None), "event_id: is required"),
        (item(customer_id=None, channel=None), "customer_id: is required; channel: is required"),
        (item(customer_id=42), "customer_id: must be a valid string, not number 42"),
        (item(customer_id="has space"), "customer_id: 'has space' may only contain letters, digits"),
        (item(customer_id="x" * 201), "customer_id: must have at most 200 characters"),
        (item(event_id=""), "event_id: must have at least 1 character"),
        (item(occurred_at="2026-11-23T09:00:00"), "occurred_at: '2026-11-23T09:00:00' is not RFC 3339 with an offset"),
        (item(occurred_at="yesterday"), "occurred_at: 'yesterday' is not RFC 3339"),
        (item(occurred_at=1763890000), "occurred_at: must be an RFC 3339 string with an offset"),
        (item(kind="reply"), "kind 'reply' is not a touch kind (one of: value, promo, service, transactional)"),
        (item(type="response", kind="promo"), "kind 'promo' is not a response kind"),
        (item(kind="spam"), "kind: 'spam' is not one of value, promo, service, transactional, reply, open"),
        (item(attributes={"blob": "x" * 9000}), "attributes: is 9011 bytes as JSON; at most 8192 allowed"),
        (item(attributes=["a"]), "attributes: must be a JSON object, not array"),
        (item(colour="red"), "colour: is not a known field"),
        ("an event", "event must be a JSON object, not string"),
        (None, "event must be a JSON object, not null"),
        ([item()], "event must be a JSON object, not array"),
    ],
)
def test_check_event_says_what_where_and_why(value: object, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        check(value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("occurred_at", "accepted"),
    [
        ("2026-11-23T09:35:00Z", True),  # exactly the allowed skew ahead
        ("2026-11-23T09:35:01Z", False),
        ("2026-11-23T17:35:00+08:00", True),  # same instant as 09:35Z, other offset
        ("2026-11-24T09:30:00Z", False),
        ("2020-01-01T00:00:00Z", True),  # old events are the scorer's business (late handling)
    ],
)
def test_future_skew(occurred_at: str, accepted: bool) -> None:
    if accepted:
        assert check(item(occurred_at=occurred_at)).occurred_at_ms > 0
    else:
        with pytest.raises(ValueError, match=r"occurred_at: .* in the future \(at most 300s allowed\)"):
            check(item(occurred_at=occurred_at))


def test_check_events_keeps_valid_items_and_indexes_rejections() -> None:
    batch = check_events(
        [item(event_id="a"), item(channel="fax"), 7, item(event_id="b", type="response", kind="reply")],
        now=NOW,
        max_future_skew_s=SKEW_S,
    )
    assert [(index, ev.event_id) for index, ev in batch.valid] == [(0, "a"), (3, "b")]
    assert [r.index for r in batch.rejected] == [1, 2]
    assert batch.rejected[0].error.startswith("channel: 'fax'")


def test_first_occurrences_keeps_order_and_counts_repeats() -> None:
    events = [check(item(event_id=i, customer_id=f"c{n}")) for n, i in enumerate(["a", "b", "a", "c", "b"])]
    unique, repeats = first_occurrences(events)
    assert [(e.event_id, e.customer_id) for e in unique] == [("a", "c0"), ("b", "c1"), ("c", "c3")]
    assert repeats == 2


@pytest.mark.parametrize(
    ("loc", "request_locations", "expected"),
    [
        (("attributes", "a", 0), False, "attributes.a[0]"),
        (("kind", "function-after[attrgetter(), str-enum[TouchKind]]"), False, "kind"),
        (("body", "tier"), True, "tier"),
        (("body",), True, "body"),
        (("path", "customer_id"), True, "customer_id (in path)"),
        ((), False, ""),
    ],
)
def test_format_loc(loc: tuple[object, ...], request_locations: bool, expected: str) -> None:
    assert format_loc(loc, request_locations=request_locations) == expected


def test_long_messages_and_inputs_are_truncated() -> None:
    errors = [{"type": "string_type", "loc": (f"f{i}",), "msg": "Input should be a valid string", "input": i}
              for i in range(200)]
    assert len(describe_errors(errors)) <= 1000
    huge = describe_errors([{"type": "int_type", "loc": ("n",), "msg": "Input should be a valid integer",
                             "input": "9" * 500}])
    assert len(huge) < 120 and huge.endswith("…")


def test_a_valid_event_passes_untouched() -> None:
    event = check(item(kind="promo", attributes={"subject": "Hello"}, rep_id="r1"))
    assert event.kind == "promo" and event.attributes == {"subject": "Hello"}
    assert event.occurred_at == datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert event.occurred_at - NOW == timedelta(minutes=-30)


@pytest.mark.parametrize("raw", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000])
def test_hostile_nesting_is_a_400_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(BodyRefused) as info:
        parse_json(raw)
    assert (info.value.status, info.value.code) == (400, "json_too_deep")


def test_a_lower_depth_bound_is_checked_before_parsing() -> None:
    assert parse_json(b'[[["[[[[[[[["]]]', max_depth=3) == [[["[[[[[[[["]]]
    with pytest.raises(BodyRefused, match="4 levels deep; at most 3"):
        parse_json(b'[[[{"a": "]]]]"}]]]', max_depth=3)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(BodyRefused, match="surrogate"):
        parse_json(b'{"event_id": "\\ud800"}')


def test_a_deeply_nested_wrong_value_is_described_without_recursing() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="event_id"):
        check(item(event_id=deep))
