"""The scorer's batch decoder gives, for every record, exactly what pydantic alone gave: the same
ContactEvent or profile and times, or the same error (class and message, so a dead letter's reason
is unchanged); in order, one result per record, and never raises."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer.envelopes import DecodedEvent, DecodedProfile, Undecodable, decode_events, decode_profiles
from scorer.history import contact_event
from services.contract import MAX_ATTRIBUTES_DEPTH, MAX_ATTRIBUTES_VALUES, EventEnvelope, ProfileEnvelope, to_ms
from services.contract_fast import fast_event, fast_profile
from tests.services.envelope_strategies import event_envelope_bytes, profile_envelope_bytes
from tests.services.test_contract import (
    BAD_TIME_ZONES,
    GOOD_TIME_ZONES,
    IN_RANGE,
    LEAP_SECONDS,
    NON_JSON_NUMBERS,
    OUT_OF_RANGE,
    nested,
)

RECEIVED = "2026-11-23T09:00:01.5Z"


def reference_event(value: bytes | None) -> tuple[Any, ...]:
    """What the scorer decoded before the fast path (scorer/processor.py `decode`), pydantic alone."""
    try:
        if value is None:
            raise ValueError("record has no value")
        envelope = EventEnvelope.model_validate_json(value)
    except Exception as exc:  # whatever pydantic raises is the reference, also what the decoder must not raise
        return ("refused", type(exc).__name__, str(exc))
    return ("event", contact_event(envelope.event, envelope.producer), to_ms(envelope.received_at))


def reference_profile(value: bytes | None) -> tuple[Any, ...]:
    try:
        if value is None:
            raise ValueError("record has no value")
        envelope = ProfileEnvelope.model_validate_json(value)
    except Exception as exc:
        return ("refused", type(exc).__name__, str(exc))
    profile = envelope.profile.model_dump(exclude_none=True, mode="json")
    return ("profile", envelope.customer_id, profile, list(profile), to_ms(envelope.updated_at))


def outcome(result: DecodedEvent | DecodedProfile | Undecodable) -> tuple[Any, ...]:
    if isinstance(result, Undecodable):
        return ("refused", type(result.error).__name__, str(result.error))
    if isinstance(result, DecodedEvent):
        return ("event", result.event, result.received_at_ms)
    return ("profile", result.customer_id, result.profile, list(result.profile), result.updated_at_ms)


def event_bytes(received_at: Any = RECEIVED, **fields: Any) -> bytes:
    event = {"event_id": "e1", "type": "touch", "customer_id": "c1", "channel": "email",
             "occurred_at": "2026-11-23T09:00:00Z", **fields}
    return json.dumps({"v": 1, "producer": "api", "received_at": received_at, "event": event}).encode()


def profile_bytes(updated_at: Any = RECEIVED, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "customer_id": "c1", "updated_at": updated_at, "profile": fields}).encode()


def decoded_event(value: bytes) -> DecodedEvent | Undecodable:
    [result] = decode_events([value])
    assert outcome(result) == reference_event(value)
    return result


def decoded_profile(value: bytes) -> DecodedProfile | Undecodable:
    [result] = decode_profiles([value])
    assert outcome(result) == reference_profile(value)
    return result


def refusal(result: DecodedEvent | DecodedProfile | Undecodable) -> str:
    assert isinstance(result, Undecodable)
    return str(result.error)


# ---- every record, valid or hostile ----

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(event_envelope_bytes(), st.none()), max_size=6))
def test_a_batch_of_events_decodes_as_pydantic_alone_decoded_it(values: list[bytes | None]) -> None:
    assert [outcome(r) for r in decode_events(values)] == [reference_event(v) for v in values]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(profile_envelope_bytes(), st.none()), max_size=6))
def test_a_batch_of_profiles_decodes_as_pydantic_alone_decoded_it(values: list[bytes | None]) -> None:
    assert [outcome(r) for r in decode_profiles(values)] == [reference_profile(v) for v in values]


def test_a_valid_event_takes_the_fast_path_and_becomes_the_cores_event() -> None:
    value = event_bytes(type="response", kind="reply", in_reply_to="e0", rep_id="r1", campaign_id="k1",
                        occurred_at="2026-11-23T17:00:00.25+08:00", attributes={"a": [1, 2.5, None]})
    assert fast_event(value) is not None
    result = decoded_event(value)
    assert isinstance(result, DecodedEvent)
    assert (result.event.producer, result.event.occurred_at_ms, result.received_at_ms) == \
        ("api", to_ms(datetime.fromisoformat("2026-11-23T09:00:00.25Z")), 1_795_424_401_500)
    assert result.event.dedup_key == "api/e1"


def test_records_without_a_value_are_undecodable() -> None:
    assert refusal(decode_events([None])[0]) == refusal(decode_profiles([None])[0]) == "record has no value"


@pytest.mark.parametrize("moment", ["2026-11-23T09:00:00", "2026-11-23"])
def test_an_envelope_moment_without_an_offset_is_a_dead_letter_not_a_crash(moment: str) -> None:
    assert refusal(decoded_event(event_bytes(received_at=moment))).startswith("1 validation error for EventEnvelope\n"
                                                                              "received_at\n")
    assert "no UTC offset" in refusal(decoded_profile(profile_bytes(updated_at=moment)))


# ---- the contract's own cases (tests/services/test_contract.py), through the decoder ----

@pytest.mark.parametrize("occurred_at", OUT_OF_RANGE)
def test_moments_outside_the_supported_range_are_refused(occurred_at: str) -> None:
    assert "outside the supported range" in refusal(decoded_event(event_bytes(occurred_at=occurred_at)))
    assert "outside the supported range" in refusal(decoded_event(event_bytes(received_at=occurred_at)))
    assert "outside the supported range" in refusal(decoded_profile(profile_bytes(updated_at=occurred_at)))


@pytest.mark.parametrize("occurred_at", IN_RANGE)
def test_the_range_is_judged_after_the_offset(occurred_at: str) -> None:
    for value in (event_bytes(occurred_at=occurred_at), event_bytes(received_at=occurred_at)):
        assert isinstance(decoded_event(value), DecodedEvent)
    assert isinstance(decoded_profile(profile_bytes(updated_at=occurred_at)), DecodedProfile)


def test_attributes_nesting_is_bounded() -> None:
    assert isinstance(decoded_event(event_bytes(attributes=nested(MAX_ATTRIBUTES_DEPTH))), DecodedEvent)
    assert f"deeper than {MAX_ATTRIBUTES_DEPTH} levels" in refusal(
        decoded_event(event_bytes(attributes=nested(MAX_ATTRIBUTES_DEPTH + 1))))


def test_hostile_nesting_is_refused_without_recursing() -> None:
    value = event_bytes(attributes={"x": "HOLE"}).replace(b'"HOLE"', b"[" * 100_000 + b"]" * 100_000)
    assert "recursion limit exceeded" in refusal(decoded_event(value))


def test_attributes_value_count_is_bounded() -> None:
    for attributes in ({f"k{i}": i for i in range(MAX_ATTRIBUTES_VALUES + 1)},
                       {"list": list(range(MAX_ATTRIBUTES_VALUES))}):
        assert "more than" in refusal(decoded_event(event_bytes(attributes=attributes)))


@pytest.mark.parametrize(("value", "reason"), NON_JSON_NUMBERS)
def test_numbers_the_json_world_cannot_carry_are_refused(value: float, reason: str) -> None:
    message = refusal(decoded_event(event_bytes(attributes={"n": {"deep": [value]}})))
    assert "n.deep[0]" in message and reason in message


@pytest.mark.parametrize("timezone", BAD_TIME_ZONES)
def test_time_zones_must_be_iana_names(timezone: str) -> None:
    assert "not an IANA time zone" in refusal(decoded_profile(profile_bytes(timezone=timezone)))


@pytest.mark.parametrize("timezone", GOOD_TIME_ZONES)
def test_iana_time_zones_are_accepted(timezone: str) -> None:
    value = profile_bytes(timezone=timezone)
    assert fast_profile(value) is not None
    result = decoded_profile(value)
    assert isinstance(result, DecodedProfile) and result.profile == {"timezone": timezone, "do_not_contact": False}


@pytest.mark.parametrize(("text", "utc"), LEAP_SECONDS)
def test_a_leap_second_is_accepted_as_the_last_instant_of_its_minute(text: str, utc: str) -> None:
    result = decoded_event(event_bytes(occurred_at=text))
    assert isinstance(result, DecodedEvent) and result.event.occurred_at_ms == to_ms(datetime.fromisoformat(utc))


def test_a_second_beyond_60_is_refused_naming_the_field() -> None:
    assert "event.occurred_at\n" in refusal(decoded_event(event_bytes(occurred_at="2016-12-31T23:59:61Z")))


def test_identities_in_a_profile_are_normalised_as_pydantic_does() -> None:
    """The fast path leaves emails and phones to pydantic (never on the topic from the API)."""
    value = profile_bytes(emails=[" Ann@Example.COM "], phones=[" +86 138 0013 8000 "])
    assert fast_profile(value) is None
    result = decoded_profile(value)
    assert isinstance(result, DecodedProfile)
    assert result.profile["emails"] == ["ann@example.com"] and result.profile["phones"] == ["+86 138 0013 8000"]
