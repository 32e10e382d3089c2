"""The msgspec fast path of the envelopes never accepts what pydantic refuses, and where it accepts it
decodes the same values; and it does accept what our producers write (else it would be no fast path)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from services import contract, contract_fast
from services.contract import (
    EARLIEST_MOMENT,
    LATEST_MOMENT,
    EventEnvelope,
    EventIn,
    ProfileEnvelope,
    ProfileIn,
    check_moment,
    encode,
    parse_moment,
    to_ms,
)
from services.contract_fast import (
    Declined,
    FastEvent,
    FastProfile,
    fast_event,
    fast_profile,
    moment_ms,
    profile_values,
    within_bounds,
)
from tests.services.envelope_strategies import (
    ENVELOPE_FIELD_VALUES,
    EVENT_FIELD_VALUES,
    OFFSETS,
    PROFILE_FIELD_VALUES,
    Obj,
    Raw,
    dump,
    edge_attributes,
    event_envelope,
    event_envelope_bytes,
    hostile_values,
    moments,
    profile_envelope,
    profile_envelope_bytes,
    valid_attributes,
    valid_event,
    valid_profile,
)

REFUSED = (ValidationError, ValueError, TypeError, OverflowError, RecursionError)
SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=SLOW_DRAWS)


def by_pydantic(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except REFUSED:
        return None


def assert_same_event(fast: FastEvent, envelope: EventEnvelope) -> None:
    mine, theirs = fast.envelope.event, envelope.event
    names = ("event_id", "type", "customer_id", "channel", "kind", "in_reply_to", "rep_id", "campaign_id", "attributes")
    assert {n: getattr(mine, n) for n in names} == {n: getattr(theirs, n) for n in names}
    assert all(type(getattr(mine, n)) is type(getattr(theirs, n)) for n in names)  # plain str, not a subclass
    assert fast.envelope.producer == envelope.producer
    assert (fast.occurred_at_ms, fast.received_at_ms) == (to_ms(theirs.occurred_at), to_ms(envelope.received_at))


def assert_same_profile(fast: FastProfile, envelope: ProfileEnvelope) -> None:
    assert fast.envelope.customer_id == envelope.customer_id
    assert fast.updated_at_ms == to_ms(envelope.updated_at)
    mine, theirs = profile_values(fast.envelope.profile), envelope.profile.model_dump(exclude_none=True, mode="json")
    assert (mine, list(mine)) == (theirs, list(theirs))


# ---- same outcome as pydantic, for valid and hostile records ----

def check_event(raw: bytes) -> None:
    fast, reference = fast_event(raw), by_pydantic(EventEnvelope, raw)
    note("fast" if fast else "pydantic accepts" if reference else "refused")
    if fast is not None:
        assert reference is not None, "the fast path accepted what pydantic refuses"
        assert_same_event(fast, reference)


def check_profile(raw: bytes) -> None:
    fast, reference = fast_profile(raw), by_pydantic(ProfileEnvelope, raw)
    note("fast" if fast else "pydantic accepts" if reference else "refused")
    if fast is not None:
        assert reference is not None, "the fast path accepted what pydantic refuses"
        assert_same_profile(fast, reference)


def with_field(envelope: Obj, inner: str | None, field: str, value: Any) -> bytes:
    """The envelope's JSON with `field` (of the envelope, or of its `inner` object) set to `value`."""
    def set_in(obj: Obj) -> Obj:
        return Obj((*((k, v) for k, v in obj.pairs if k != field), (field, value)))
    pairs = [(k, set_in(v) if k == inner else v) for k, v in envelope.pairs]
    return dump(Obj(tuple(pairs)) if inner else set_in(envelope), ascii_only=False, spaced=False).encode(
        "utf-8", "surrogatepass")


@PROPERTY
@given(event_envelope_bytes())
def test_an_event_the_fast_path_accepts_is_accepted_by_pydantic_with_the_same_values(raw: bytes) -> None:
    check_event(raw)


@PROPERTY
@given(profile_envelope_bytes())
def test_a_profile_the_fast_path_accepts_is_accepted_by_pydantic_with_the_same_values(raw: bytes) -> None:
    check_profile(raw)


@pytest.mark.parametrize(("inner", "field"), [("event", f) for f in sorted(EVENT_FIELD_VALUES)]
                         + [(None, f) for f in ("v", "producer", "received_at")])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_near_misses_of_each_event_field_are_judged_as_pydantic_judges_them(inner: str | None, field: str,
                                                                             data: st.DataObject) -> None:
    values = EVENT_FIELD_VALUES if inner else ENVELOPE_FIELD_VALUES
    check_event(with_field(data.draw(event_envelope()), inner, field, data.draw(values[field])))


@pytest.mark.parametrize(("inner", "field"), [("profile", f) for f in sorted(PROFILE_FIELD_VALUES)]
                         + [(None, f) for f in ("v", "customer_id", "updated_at")])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_near_misses_of_each_profile_field_are_judged_as_pydantic_judges_them(inner: str | None, field: str,
                                                                              data: st.DataObject) -> None:
    values = PROFILE_FIELD_VALUES if inner else ENVELOPE_FIELD_VALUES
    check_profile(with_field(data.draw(profile_envelope()), inner, field, data.draw(values[field])))


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(event_envelope(), edge_attributes(), st.booleans())
def test_attributes_at_their_bounds_are_judged_as_pydantic_judges_them(envelope: Obj, attributes: Any,
                                                                       ascii_only: bool) -> None:
    """Depth, number of values, bytes as JSON (in records long enough for the size to be computed)."""
    pairs = [(k, Obj((*v.pairs, ("attributes", attributes))) if k == "event" else v) for k, v in envelope.pairs]
    raw = dump(Obj(tuple(pairs)), ascii_only=ascii_only, spaced=False).encode()
    fast, reference = fast_event(raw), by_pydantic(EventEnvelope, raw)
    if fast is not None:
        assert reference is not None, "the fast path accepted what pydantic refuses"
        assert_same_event(fast, reference)


@settings(max_examples=800, deadline=None)
@given(moments())
def test_a_moment_read_fast_is_the_same_instant_for_parse_moment_and_pydantic(text: Any) -> None:
    """occurred_at is read by the contract's parse_moment, received_at/updated_at by pydantic's datetime:
    the fast reading must agree with both wherever it reads at all."""
    try:
        fast = moment_ms(text)
    except (Declined, ValueError, TypeError):
        return
    assert to_ms(parse_moment(text)) == fast
    assert to_ms(check_moment(TypeAdapter(datetime).validate_json(json.dumps(text)))) == fast


# ---- and it is a fast path: what our producers write is decoded by it ----

@PROPERTY
@given(valid_event(), st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2198, 1, 1),
                                   timezones=st.sampled_from(OFFSETS)))
def test_events_as_the_intakes_write_them_take_the_fast_path(body: Any, received_at: datetime) -> None:
    event = EventIn.model_validate(dict(body.pairs))
    raw = encode(EventEnvelope(producer="api", received_at=received_at, event=event))
    fast = fast_event(raw)
    assert fast is not None, raw
    assert_same_event(fast, EventEnvelope.model_validate_json(raw))


@PROPERTY
@given(valid_profile(), st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2198, 1, 1),
                                     timezones=st.just(UTC)))
def test_profiles_as_the_api_writes_them_take_the_fast_path(body: Any, updated_at: datetime) -> None:
    profile = ProfileIn.model_validate(dict(body.pairs)).model_copy(update={"emails": None, "phones": None})
    raw = encode(ProfileEnvelope(customer_id="c1", updated_at=updated_at, profile=profile))
    fast = fast_profile(raw)
    assert fast is not None, raw
    assert_same_profile(fast, ProfileEnvelope.model_validate_json(raw))


@pytest.mark.parametrize("declined", [
    b'{"producer":"p","received_at":"2026-11-23T09:00:00Z","event":{"event_id":"e","type":"touch",'
    b'"customer_id":"c1\\n","channel":"email","occurred_at":"2026-11-23T09:00:00Z"}}',  # `$` before a newline
    b'{"producer":"p","received_at":"2026-11-23T09:00:00Z","event":{"event_id":"e","type":"touch",'
    b'"customer_id":"c1","channel":"email","occurred_at":"2026-11-23T09:00:00Z","in_reply_to":"e0"}}',
    b'{"producer":"p","received_at":"2026-11-23T09:00:00Z","event":{"event_id":"e","type":"response",'
    b'"customer_id":"c1","channel":"email","occurred_at":"2026-11-23T09:00:00Z","kind":"promo"}}',
    b'{"producer":"p","received_at":"1969-12-31T23:59:59Z","event":{"event_id":"e","type":"touch",'
    b'"customer_id":"c1","channel":"email","occurred_at":"2026-11-23T09:00:00Z"}}',
    b'{"producer":"p","received_at":"2026-11-23T09:00:00Z","event":{"event_id":"e","type":"touch",'
    b'"customer_id":"c1","channel":"email","occurred_at":"1970-01-01T00:30:00+01:00"}}',
])
def test_what_only_python_checks_is_declined(declined: bytes) -> None:
    """Each rule msgspec cannot express, where the record breaks it: the fast path must not accept."""
    assert by_pydantic(EventEnvelope, declined) is None
    assert fast_event(declined) is None


# ---- attributes: the bounds checked without paths, the size only where it could matter ----

@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(st.one_of(valid_attributes(), edge_attributes(), hostile_values()))
def test_within_bounds_is_what_check_attributes_says(value: Any) -> None:
    attributes = json.loads(dump({"x": value}, ascii_only=True, spaced=False))  # NaN, Infinity included
    try:
        contract.check_attributes(attributes)
    except ValueError:
        assert not within_bounds(attributes)
    else:
        assert within_bounds(attributes)


def short_floats() -> st.SearchStrategy[Raw]:
    return st.sampled_from([Raw(t) for t in ("1e15", "9e15", "1E5", "1e16", "5e-324", "1e-7", "0e0", "-1e9", "1.5")])


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
              short_floats()),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner, max_size=8),
    max_leaves=40), st.booleans())
def test_compact_json_of_parsed_json_is_at_most_4_5_times_the_text(value: Any, ascii_only: bool) -> None:
    text = dump(value, ascii_only=ascii_only, spaced=False).encode()
    assert contract.attributes_json_size({"a": json.loads(text)}) - len('{"a":}') <= 4.5 * len(text)


def test_the_worst_expansion_is_a_four_character_float() -> None:
    text = "[" + ",".join(["1e15"] * 500) + "]"
    assert contract.attributes_json_size({"a": json.loads(text)}) - len('{"a":}') == 2 + 500 * 18 + 499


# ---- the mirror is the contract: same fields, bounds, names ----

@pytest.mark.parametrize(("mirror", "model"), [
    (contract_fast.EventInFast, EventIn), (contract_fast.EventEnvelopeFast, EventEnvelope),
    (contract_fast.ProfileInFast, ProfileIn), (contract_fast.ProfileEnvelopeFast, ProfileEnvelope),
])
def test_the_mirror_has_the_contracts_fields(mirror: type[msgspec.Struct], model: type[BaseModel]) -> None:
    fields = {f.name: f.required for f in msgspec.structs.fields(mirror)}
    assert fields == {name: info.is_required() for name, info in model.model_fields.items()}


@pytest.mark.parametrize(("literal", "enum"), [
    (contract_fast.EventTypeName, contract.EventType), (contract_fast.ChannelName, contract.Channel),
    (contract_fast.TouchKindName, contract.TouchKind), (contract_fast.ResponseKindName, contract.ResponseKind),
    (contract_fast.TierName, contract.Tier), (contract_fast.StageName, contract.Stage),
])
def test_the_mirrors_names_are_the_contracts(literal: Any, enum: Any) -> None:
    assert list(get_args(literal)) == [member.value for member in enum]


def test_the_mirrors_bounds_are_the_contracts() -> None:
    [free] = contract.FreeId.__metadata__
    [identifier] = contract.Identifier.__metadata__
    [fast_free] = contract_fast.FreeId.__metadata__
    [fast_identifier] = contract_fast.Identifier.__metadata__
    assert (fast_free.min_length, fast_free.max_length) == (free.min_length, free.max_length)
    assert (fast_identifier.min_length, fast_identifier.max_length) == (identifier.min_length, identifier.max_length)
    assert fast_identifier.pattern == identifier.pattern.removesuffix("$") + r"\Z"
    [zone_bound] = ProfileIn.model_fields["timezone"].metadata
    assert contract_fast.MAX_TIME_ZONE_CHARS == zone_bound.max_length


def test_the_range_shortcut_holds_for_the_contracts_range() -> None:
    """moment_ms skips the range check for years strictly inside the range by more than a day's offset."""
    for moment in (EARLIEST_MOMENT, LATEST_MOMENT):
        assert moment.timetuple()[1:6] == (1, 1, 0, 0, 0)
    assert contract_fast._SURELY_IN_RANGE == (f"{EARLIEST_MOMENT.year + 1}", f"{LATEST_MOMENT.year - 2}")
