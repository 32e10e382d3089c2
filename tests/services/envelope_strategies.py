"""Hypothesis strategies: topic envelopes as the bytes a consumer reads, valid and hostile.

A valid envelope is drawn first (in every form our producers or the contract allow), then a few
mutations may spoil it: a field dropped, an unknown one added, a key repeated with another value, a
value replaced by a hostile one (wrong type, boundary length, unicode, lone surrogate, NaN/Infinity,
a huge or oddly written number, deep nesting, another timestamp form); and the bytes themselves may
get a BOM, trailing bytes, or be cut. Objects are written by our own serialiser (`dump`), so that a
key can repeat and a number can be written as any JSON token (1E5, -0, 1e400, 123456789012345678901).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from services.contract import (
    MAX_ATTRIBUTES_BYTES,
    MAX_ATTRIBUTES_DEPTH,
    MAX_ATTRIBUTES_VALUES,
    MAX_SAFE_INTEGER,
    Channel,
    ResponseKind,
    Stage,
    Tier,
    TouchKind,
)


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its pairs in order, a key possibly more than once."""

    pairs: tuple[tuple[str, Any], ...]

    def with_pairs(self, pairs: list[tuple[str, Any]]) -> Obj:
        return Obj(tuple(pairs))


@dataclass(frozen=True)
class Raw:
    """A JSON token written as it is (a number in some spelling, NaN, Infinity)."""

    text: str


def dump(value: Any, *, ascii_only: bool, spaced: bool) -> str:
    """JSON text of `value` (Obj, Raw, dict, list, scalars). Floats NaN/inf come out as NaN/Infinity,
    as Python's json writes them; a lone surrogate stays one (escaped, or raw when not ascii_only)."""
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, dict):
        value = Obj(tuple(value.items()))
    if isinstance(value, Obj):
        return "{" + comma.join(dump(k, ascii_only=ascii_only, spaced=spaced) + colon
                                + dump(v, ascii_only=ascii_only, spaced=spaced) for k, v in value.pairs) + "}"
    if isinstance(value, list | tuple):
        return "[" + comma.join(dump(v, ascii_only=ascii_only, spaced=spaced) for v in value) + "]"
    if isinstance(value, Raw):
        return value.text
    return json.dumps(value, ensure_ascii=ascii_only)


# ---- timestamps ----

OFFSETS = [timezone(timedelta(minutes=m)) for m in (0, 60, 330, 480, 840, -300, -570, -840, 23 * 60 + 59)]


@st.composite
def valid_moments(draw: st.DrawFn) -> str:
    """An RFC 3339 text in the contract's range as a producer may write it: Z or an offset, 0-9 fraction
    digits, sometimes lower case or a space, a leap second now and then."""
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31),
                               timezones=st.sampled_from(OFFSETS)))
    if not datetime(1970, 1, 1, tzinfo=UTC) <= moment < datetime(2200, 1, 1, tzinfo=UTC):
        moment = datetime(2026, 11, 23, 9, tzinfo=moment.tzinfo)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.sampled_from([0, 0, 3, 6, 6, 1, 2, 4, 5, 7, 9]))
    if digits:
        text += "." + f"{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    offset = moment.strftime("%z")
    zone = draw(st.sampled_from(["Z", "z"])) if offset == "+0000" and draw(st.booleans()) else \
        f"{offset[:3]}:{offset[3:]}"
    text += zone
    form = draw(st.sampled_from(["as is"] * 8 + ["lower", "space", "leap"]))
    if form == "lower":
        text = text.lower()
    elif form == "space":
        text = text.replace("T", " ")
    elif form == "leap":
        text = text[:17] + "60" + text[19:]
    return text


@st.composite
def odd_moments(draw: st.DrawFn) -> Any:
    """Timestamps pydantic or the contract may refuse, or read another way: every field out of its range,
    other separators and offsets, no offset, unix numbers, unicode digits."""
    year = draw(st.sampled_from([1, 1969, 1970, 1971, 2198, 2199, 2200, 9999]) | st.integers(0, 9999))
    fields = [draw(st.integers(0, 13)), draw(st.integers(0, 32)), draw(st.integers(0, 25)), draw(st.integers(0, 61)),
              draw(st.integers(0, 61))]
    fraction = draw(st.sampled_from(["", ".", ".5", ".123456", ".1234567", ",5", ".123456789012"]))
    zone = draw(st.sampled_from(["Z", "", "+00:00", "-00:00", "+14:00", "-14:00", "+23:59", "+24:00", "+08:60",
                                 "+0800", "+08", "+8:00", " Z", "Z\n", "UTC"]))
    sep = draw(st.sampled_from(["T", "t", " ", "_", "TT"]))
    month, day, hour, minute, second = fields
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    return draw(st.sampled_from([
        text, text.replace("2", "\uff12"), text[:10], text[:16] + zone, str(draw(st.integers(0, 2**40))),
        draw(st.integers(-(2**63), 2**64)), draw(st.floats()), None, "", "2026-W47-1T09:00:00Z", "20261123T090000Z",
    ]))


@st.composite
def edge_moments(draw: st.DrawFn) -> str:
    """Well-formed timestamps within a day of either end of the contract's range, on either side of it."""
    end = draw(st.sampled_from([datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)]))
    moment = (end + timedelta(seconds=draw(st.integers(-86_400, 86_400)))).astimezone(draw(st.sampled_from(OFFSETS)))
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


def moments() -> st.SearchStrategy[Any]:
    return st.one_of(valid_moments(), edge_moments(), odd_moments())


# ---- values ----

ID_CHARS = string.ascii_letters + string.digits + "._:@+-"
NASTY_STRINGS = ["", " ", "\n", "c1\n", "\nc1", "c 1", "\x00", "\ud800", "x\udfff", "\ufeff", "é", "\U0001f600",
                 "e" * 199, "e" * 200, "e" * 201, "\U0001f600" * 200, "\U0001f600" * 201, "é" * 200, "é" * 201]


def boundary_text(alphabet: str | None = None) -> st.SearchStrategy[str]:
    """Strings around the 1-200 character bound, astral characters included."""
    chars = st.sampled_from(alphabet) if alphabet else st.characters(codec="utf-8")
    return st.one_of(st.text(chars, min_size=1, max_size=12), st.text(chars, min_size=195, max_size=205),
                     st.sampled_from(NASTY_STRINGS))


def raw_numbers() -> st.SearchStrategy[Raw]:
    return st.sampled_from([Raw(t) for t in (
        "1E5", "1e15", "-0", "-0.0", "1.0", "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
        "123456789012345678901234567890", str(MAX_SAFE_INTEGER), str(MAX_SAFE_INTEGER + 1), str(-MAX_SAFE_INTEGER - 1),
        "9223372036854775808", "18446744073709551616", "0.1e1", "2.2250738585072011e-308",
    )])


def hostile_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
                        st.sampled_from(NASTY_STRINGS), raw_numbers())
    return st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=3), scalars, max_size=3),
                     st.just(deep(MAX_ATTRIBUTES_DEPTH + 1)), st.just(deep(300)))


def deep(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"a": value}
    return value


def json_scalars(*, finite: bool) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
                     st.floats(allow_nan=not finite, allow_infinity=not finite), st.text(max_size=20))


def valid_attributes() -> st.SearchStrategy[dict[str, Any]]:
    value = st.recursive(json_scalars(finite=True),
                         lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
    return st.dictionaries(st.text(max_size=10), value, max_size=6)


@st.composite
def edge_attributes(draw: st.DrawFn) -> Any:
    """Attributes at and across their bounds: depth, count of values, bytes as JSON (big records)."""
    room = MAX_ATTRIBUTES_BYTES - len('{"s":""}')
    return draw(st.sampled_from([
        deep(MAX_ATTRIBUTES_DEPTH - 1), deep(MAX_ATTRIBUTES_DEPTH),
        {f"k{i}": i for i in range(MAX_ATTRIBUTES_VALUES)}, {f"k{i}": i for i in range(MAX_ATTRIBUTES_VALUES + 1)},
        {"s": "x" * (room + draw(st.integers(-3, 3)))},
        {"s": "é" * ((room + draw(st.integers(-3, 3))) // 2)},
        {"f": [Raw("1e15")] * draw(st.sampled_from([100, 400, 431, 432, 450]))},
        {"f": [Raw("1E5")] * draw(st.integers(0, MAX_ATTRIBUTES_VALUES))},
        {"n": {"deep": [draw(raw_numbers())]}},
    ]))


# ---- events ----

TOUCH_KINDS = [k.value for k in TouchKind]
RESPONSE_KINDS = [k.value for k in ResponseKind]


@st.composite
def valid_event(draw: st.DrawFn) -> Obj:
    touch = draw(st.booleans())
    pairs: list[tuple[str, Any]] = [
        ("event_id", draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=200))),
        ("type", "touch" if touch else "response"),
        ("customer_id", draw(st.text(st.sampled_from(ID_CHARS), min_size=1, max_size=200))),
        ("channel", draw(st.sampled_from([c.value for c in Channel]))),
        ("occurred_at", draw(valid_moments())),
    ]
    optional = {
        "rep_id": st.text(min_size=1, max_size=20),
        "campaign_id": st.text(min_size=1, max_size=20),
        "kind": st.sampled_from(TOUCH_KINDS if touch else RESPONSE_KINDS),
        "in_reply_to": st.just("e0") if not touch else st.nothing(),
        "attributes": valid_attributes(),
    }
    for name, values in optional.items():
        choice = draw(st.sampled_from(["absent", "absent", "null", "value", "value"]))
        if choice == "null":
            pairs.append((name, None))
        elif choice == "value" and not values.is_empty:
            pairs.append((name, draw(values)))
    return Obj(tuple(draw(st.permutations(pairs))))


def near_identifiers() -> st.SearchStrategy[str]:
    """Identifiers that are almost right: a newline or space after, a foreign character, bound lengths."""
    valid = st.text(st.sampled_from(ID_CHARS), min_size=1, max_size=8)
    return st.one_of(valid.map(lambda s: s + "\n"), valid.map(lambda s: s + " "), valid.map(lambda s: "é" + s),
                     boundary_text(ID_CHARS))


EVENT_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": boundary_text(), "campaign_id": boundary_text(), "rep_id": boundary_text(),
    "in_reply_to": st.text(min_size=1, max_size=8), "customer_id": near_identifiers(),
    "type": st.sampled_from(["touch", "response", "TOUCH", "reply", ""]),
    "channel": st.sampled_from(["email", "EMAIL", "e-mail", "wechat", ""]),
    "kind": st.sampled_from(TOUCH_KINDS + RESPONSE_KINDS + ["Promo", "other", ""]),
    "occurred_at": moments(), "attributes": edge_attributes(),
}
"""Replacement values per field: near-misses and bounds of what the field takes."""


@st.composite
def event_envelope(draw: st.DrawFn) -> Obj:
    pairs: list[tuple[str, Any]] = [("producer", draw(st.sampled_from(["api", "intake", "", "é\U0001f600"]))),
                                    ("received_at", draw(valid_moments())), ("event", draw(valid_event()))]
    if draw(st.booleans()):
        pairs.insert(0, ("v", 1))
    return Obj(tuple(pairs))


ENVELOPE_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([1, 2, 0, Raw("1.0"), True, "1", None]),
    "producer": st.one_of(boundary_text(), st.integers()),
    "received_at": moments(), "updated_at": moments(), "customer_id": near_identifiers(),
}


# ---- profiles ----

@st.composite
def valid_profile(draw: st.DrawFn) -> Obj:
    optional = {
        "tier": st.sampled_from([t.value for t in Tier]), "stage": st.sampled_from([s.value for s in Stage]),
        "timezone": st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York", "Europe/Berlin"]),
        "owner_rep_id": st.text(min_size=1, max_size=20), "do_not_contact": st.booleans(),
        "emails": st.just(["ann@example.com"]), "phones": st.just(["+8613800138000"]),
    }
    pairs: list[tuple[str, Any]] = []
    for name, values in optional.items():
        choices = {"emails": ["absent"] * 6 + ["null", "value"], "phones": ["absent"] * 6 + ["null", "value"],
                   "do_not_contact": ["absent", "value"]}.get(name, ["absent", "null", "value", "value"])
        choice = draw(st.sampled_from(choices))
        if choice == "null":
            pairs.append((name, None))
        elif choice == "value":
            pairs.append((name, draw(values)))
    return Obj(tuple(draw(st.permutations(pairs))))


PROFILE_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "tier": st.sampled_from(["A", "a", "D", ""]), "stage": st.sampled_from(["lead", "Lead", "x"]),
    "timezone": st.sampled_from(["Asia/Shanghai", "asia/shanghai", "Mars/Olympus", "", "UTC\n", "../etc/passwd",
                                 "America/Argentina/ComodRivadavia", "x" * 64, "x" * 65]),
    "owner_rep_id": boundary_text(), "do_not_contact": st.sampled_from([True, False, "true", "yes", 1, 0, None, "1"]),
    "emails": st.sampled_from([[], [" Ann@Example.COM "], ["ann@example.com"], ["bad"], ["a@b"] * 21, ["Ann@x.org"]]),
    "phones": st.sampled_from([[], ["+8613800138000"], [" +1 (555) 010-0000 "], ["abc"], ["12"]]),
}


@st.composite
def profile_envelope(draw: st.DrawFn) -> Obj:
    pairs: list[tuple[str, Any]] = [("customer_id", draw(st.text(st.sampled_from(ID_CHARS), min_size=1, max_size=200))),
                                    ("updated_at", draw(valid_moments())), ("profile", draw(valid_profile()))]
    if draw(st.booleans()):
        pairs.insert(0, ("v", 1))
    return Obj(tuple(pairs))


# ---- mutations and bytes ----

EXTRA_KEYS = ["x", "occurred_at_ms", "Event_id", "event_id ", "attributes2", "v"]


@st.composite
def mutated(draw: st.DrawFn, obj: Obj, field_values: dict[str, st.SearchStrategy[Any]]) -> Obj:
    """`obj` with 0-3 mutations of its own pairs (see the module's docstring)."""
    pairs = list(obj.pairs)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        what = draw(st.sampled_from(["drop", "extra", "repeat", "replace", "replace", "hostile"]))
        if not pairs and what != "extra":
            continue
        at = draw(st.integers(0, max(0, len(pairs) - 1)))
        if what == "drop":
            del pairs[at]
        elif what == "extra":
            pairs.insert(at, (draw(st.sampled_from(EXTRA_KEYS)), draw(hostile_values())))
        else:
            key = pairs[at][0]
            values = field_values.get(key, hostile_values()) if what != "hostile" else hostile_values()
            new = (key, draw(values))
            if what == "repeat":
                pairs.insert(at + draw(st.integers(0, 1)), new)
            else:
                pairs[at] = new
    return obj.with_pairs(pairs)


@st.composite
def as_bytes(draw: st.DrawFn, value: Any, *, spoil: bool = True) -> bytes:
    """`value` written as JSON bytes, sometimes (with `spoil`) spoiled at the byte level."""
    text = dump(value, ascii_only=draw(st.booleans()), spaced=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes invalid UTF-8
    how = draw(st.sampled_from(["none"] * 4 + ["bom", "trailing", "cut", "byte"])) if spoil else "none"
    if how == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif how == "trailing":
        raw += draw(st.sampled_from([b"\n", b" \r\n\t", b"x", b"\x00", b"{}", b",", b"\xff"]))
    elif how == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "byte":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at:]
    return raw


@st.composite
def one_defect(draw: st.DrawFn, obj: Obj, field_values: dict[str, st.SearchStrategy[Any]]) -> Obj:
    """`obj` with one field set (replaced, or added where absent) to a near-miss value of that field."""
    key = draw(st.sampled_from(sorted(field_values)))
    value = draw(field_values[key])
    pairs = [(k, v) for k, v in obj.pairs if k != key]
    return obj.with_pairs([*pairs, (key, value)])


def _spoilt(draw: st.DrawFn, envelope: Obj, inner: str, inner_values: dict[str, st.SearchStrategy[Any]]) -> bytes:
    """The envelope valid (1/3), with one near-miss field inside or in the envelope (1/3), or mutated at
    random at both levels (1/3); then written as bytes."""
    how = draw(st.sampled_from(["valid", "one defect", "mutations"]))
    if how == "one defect":
        if draw(st.integers(0, 4)):
            pairs = [(k, draw(one_defect(v, inner_values)) if k == inner else v) for k, v in envelope.pairs]
            envelope = envelope.with_pairs(pairs)
        else:
            envelope = draw(one_defect(envelope, ENVELOPE_FIELD_VALUES))
    elif how == "mutations":
        pairs = [(k, draw(mutated(v, inner_values)) if k == inner else v) for k, v in envelope.pairs]
        envelope = draw(mutated(envelope.with_pairs(pairs), ENVELOPE_FIELD_VALUES))
    return draw(as_bytes(envelope, spoil=how == "mutations"))


@st.composite
def event_envelope_bytes(draw: st.DrawFn) -> bytes:
    return _spoilt(draw, draw(event_envelope()), "event", EVENT_FIELD_VALUES)


@st.composite
def profile_envelope_bytes(draw: st.DrawFn) -> bytes:
    return _spoilt(draw, draw(profile_envelope()), "profile", PROFILE_FIELD_VALUES)
