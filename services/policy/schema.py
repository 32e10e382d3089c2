"""The policy document as written in YAML: pydantic models that validate it, with the defaults
practitioners quote (DOMAIN.md). `services/policy/model.py` turns a validated document into the
`Policy` the core computes with.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.contract import Channel, ResponseKind, Stage, Tier, TouchKind
from services.durations import parse_duration_ms

K = TypeVar("K")

MAX_COUNT = 10_000
"""Thresholds and counts in a policy (touches, samples, caps) stay below this."""


Duration = str
"""A duration as written in the policy: `90s`, `30m`, `24h`, `7d`, `2w` (validated where used)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_duration(value: str) -> str:
    parse_duration_ms(value)
    return value


def _check_rest(value: str | None) -> str | None:
    """A rest is a duration, or null: only a response ends the throttle (the customer then stays on
    the cooling-off list until one comes)."""
    return None if value is None else _check_duration(value)


def _check_durations(mapping: dict[K, str]) -> dict[K, str]:
    """Every value a duration; the error names the key."""
    for key, duration in mapping.items():
        try:
            parse_duration_ms(duration)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return mapping


DEFAULT_WARN_ABOVE = 8
MAX_WINDOWS = 8
MAX_LIST = 64
"""Segments, quiet periods and other lists in a policy hold at most this many entries."""


class FrequencyDoc(_Strict):
    window: str = "30d"
    warn_above: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    """Decision warns above this; unset: 8 (the "tends to annoy" band), or throttle_above if lower."""
    throttle_above: int = Field(default=12, ge=0, le=MAX_COUNT)
    recover_at_or_below: int = Field(default=8, ge=0, le=MAX_COUNT)
    uncounted_kinds: list[TouchKind] = [TouchKind.TRANSACTIONAL]
    escalation_factor: float = Field(default=2.0, gt=1, le=100)
    """A throttled customer whose counted touches reach this multiple of throttle_above gets a
    throttle update (the cap by a large margin: "2x the cap")."""

    @model_validator(mode="after")
    def _hysteresis(self) -> FrequencyDoc:
        if self.recover_at_or_below >= self.throttle_above:
            raise ValueError(
                f"recover_at_or_below ({self.recover_at_or_below}) must be below "
                f"throttle_above ({self.throttle_above}), or throttling would flap"
            )
        if self.warn_above is not None and self.warn_above > self.throttle_above:
            raise ValueError(f"warn_above ({self.warn_above}) must not exceed throttle_above ({self.throttle_above})")
        return self


DOMAIN_WEEKLY_CAPS = {
    Stage.LEAD: 3,
    Stage.PROSPECT: 3,
    Stage.INTENT: 2,
    Stage.NEGOTIATION: 3,
    Stage.ONBOARDING: 2,
    Stage.CUSTOMER: 2,
    Stage.LOYAL: 1,
}
DOMAIN_MIN_GAPS = {
    Channel.EMAIL: "1d",
    Channel.SMS: "2d",
    Channel.PHONE: "1d",
    Channel.WECHAT: "1d",
    Channel.WECOM: "1d",
    Channel.PUSH: "1d",
    Channel.VISIT: "7d",
    Channel.MEETING: "3d",
}


class QuietPeriodDoc(_Strict):
    """After a response of a kind in `after` on `channel`, pause the channels in `pause` for `for`."""

    after: list[ResponseKind]
    channel: Channel
    pause: list[Channel]
    for_: str = Field(alias="for")

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str) -> str:
        return _check_duration(value)


DOMAIN_QUIET_PERIODS = [
    QuietPeriodDoc.model_validate({"after": ["open"], "channel": "email", "pause": ["sms"], "for": "3d"}),
    QuietPeriodDoc.model_validate({"after": ["reply"], "channel": "wecom", "pause": ["email"], "for": "5d"}),
    QuietPeriodDoc.model_validate({"after": ["reply"], "channel": "wechat", "pause": ["email"], "for": "5d"}),
]


def _minute_of_day(value: object) -> str:
    """`"21:00"` (quote it in YAML: PyYAML reads an unquoted 21:00 as the base-60 number 1260,
    which is accepted here too as minutes after midnight)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str):
        hours, sep, minutes = value.strip().partition(":")
        if sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2:
            if int(hours) < 24 and int(minutes) < 60:
                return f"{int(hours):02d}:{minutes}"
    raise ValueError(f"{value!r} is not a time of day; write HH:MM in quotes, e.g. \"21:00\"")


class QuietHoursDoc(_Strict):
    """No touch on `channels` while the customer's local wall clock is in [from, to) (daily; a
    range whose `to` is before its `from` runs over midnight)."""

    channels: list[Channel] = Field(min_length=1)
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _time(cls, value: object) -> str:
        return _minute_of_day(value)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursDoc:
        if self.from_ == self.to:
            raise ValueError(f"from and to are both {self.to}: the range would be empty (or the whole day)")
        return self

    def minutes(self) -> tuple[int, int]:
        def of(text: str) -> int:
            hours, _, minutes = text.partition(":")
            return int(hours) * 60 + int(minutes)

        return of(self.from_), of(self.to)


_INTRUSIVE = [Channel.PUSH, Channel.SMS, Channel.PHONE]
DOMAIN_QUIET_HOURS = [
    QuietHoursDoc.model_validate({"channels": _INTRUSIVE, "from": "12:00", "to": "13:30"}),  # no pushes over lunch
    QuietHoursDoc.model_validate({"channels": _INTRUSIVE, "from": "21:00", "to": "08:00"}),  # nor at night
]


class SendingDoc(_Strict):
    """Rules the pre-send decision applies on top of the customer's status."""

    weekly_cap_default: int = Field(default=3, ge=0, le=MAX_COUNT)
    weekly_cap_by_stage: dict[Stage, int] = DOMAIN_WEEKLY_CAPS
    min_gap_default: str = "4h"
    min_gap_by_channel: dict[Channel, str] = DOMAIN_MIN_GAPS
    quiet_periods: list[QuietPeriodDoc] = DOMAIN_QUIET_PERIODS
    quiet_hours: list[QuietHoursDoc] = DOMAIN_QUIET_HOURS
    """In the customer's local time (profile `timezone`); customers without one are not held."""
    same_campaign_gap: Duration | None = "7d"
    """A second touch with the same campaign_id within this is denied ("no two teams touching for
    the same thing"); null: no such rule."""

    @field_validator("same_campaign_gap")
    @classmethod
    def _campaign_gap(cls, value: str | None) -> str | None:
        return None if value is None else _check_duration(value)

    @field_validator("min_gap_default")
    @classmethod
    def _gap(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("weekly_cap_by_stage")
    @classmethod
    def _caps(cls, value: dict[Stage, int]) -> dict[Stage, int]:
        for stage, cap in value.items():
            if not 0 <= cap <= MAX_COUNT:
                raise ValueError(f"{stage}: {cap} must be between 0 and {MAX_COUNT}")
        return value

    @field_validator("quiet_periods", "quiet_hours")
    @classmethod
    def _few_quiet_periods(cls, value: list[Any]) -> list[Any]:
        if len(value) > MAX_LIST:
            raise ValueError(f"at most {MAX_LIST} entries")
        return value

    @field_validator("min_gap_by_channel")
    @classmethod
    def _gaps(cls, value: dict[Channel, str]) -> dict[Channel, str]:
        return _check_durations(value)


DOMAIN_CADENCE = {
    Stage.LEAD: "10d",
    Stage.PROSPECT: "5d",
    Stage.INTENT: "7d",
    Stage.NEGOTIATION: "5d",
    Stage.ONBOARDING: "7d",
    Stage.CUSTOMER: "30d",
    Stage.LOYAL: "90d",
}


class CadenceDoc(_Strict):
    default: str = "30d"
    by_stage: dict[Stage, str] = DOMAIN_CADENCE
    silence: str = "90d"
    """No response of any kind for this long -> dormant (re_engage: try another way)."""
    tolerance: str = "1d"
    """re_engage fires strictly after last touch + cadence + tolerance (cadences are ranges:
    "every 5-7 days"; a customer touched exactly on cadence is never re-engaged)."""

    @field_validator("default", "silence")
    @classmethod
    def _default(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: str) -> str:
        parse_duration_ms(value, allow_zero=True)
        return value

    @field_validator("by_stage")
    @classmethod
    def _by_stage(cls, value: dict[Stage, str]) -> dict[Stage, str]:
        return _check_durations(value)


class ReplyLatencyDoc(_Strict):
    kinds: list[ResponseKind] = [ResponseKind.REPLY, ResponseKind.CALL_ANSWERED]
    max_samples: int = Field(default=50, ge=1, le=1000)


class ComplaintDoc(_Strict):
    enabled: bool = True
    cool_off: Duration = "30d"

    @field_validator("cool_off")
    @classmethod
    def _cool_off(cls, value: str) -> str:
        return _check_duration(value)


DEFAULT_REST = "14d"
"""Two weekly cadences (DOMAIN.md: intent 5-7 d, lead generation 7-10 d, customer 7-30 d)."""


class StreakDoc(_Strict):
    enabled: bool = True
    touches: int = Field(default=5, ge=1, le=MAX_COUNT)
    rest: Duration | None = DEFAULT_REST
    """Without a response, the throttle ends after this long without touches: to activate."""

    _rest = field_validator("rest")(_check_rest)


class LatencySlowdownDoc(_Strict):
    enabled: bool = True
    recent: int = Field(default=3, ge=1, le=MAX_COUNT)
    baseline_window: Duration = "90d"
    min_baseline_samples: int = Field(default=5, ge=1, le=MAX_COUNT)
    slowdown_factor: float = Field(default=2.0, gt=1, le=1000)
    recover_factor: float = Field(default=1.5, ge=1, le=1000)
    rest: Duration | None = DEFAULT_REST

    _rest = field_validator("rest")(_check_rest)

    @field_validator("baseline_window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _check_duration(value)

    @model_validator(mode="after")
    def _hysteresis(self) -> LatencySlowdownDoc:
        if self.recover_factor >= self.slowdown_factor:
            raise ValueError(f"recover_factor ({self.recover_factor}) must be below slowdown_factor "
                             f"({self.slowdown_factor}), or the signal would flap")
        return self


class RateDropDoc(_Strict):
    """A response rate over the latest touches against the customer's own earlier rate."""

    enabled: bool = True
    kinds: list[ResponseKind] | None = None
    """Responses that count (None: any response)."""
    recent_touches: int = Field(default=5, ge=1, le=MAX_COUNT)
    min_baseline_touches: int = Field(default=10, ge=1, le=MAX_COUNT)
    settle: Duration = "3d"
    """Touches younger than this have not had time to be answered and are left out."""
    drop: float = Field(default=0.5, gt=0, lt=1)
    """Fires when the recent rate is at least this fraction below the baseline rate."""
    rest: Duration | None = DEFAULT_REST

    _rest = field_validator("rest")(_check_rest)

    @field_validator("settle")
    @classmethod
    def _settle(cls, value: str) -> str:
        return _check_duration(value)


class SignalsDoc(_Strict):
    complaint: ComplaintDoc = ComplaintDoc()
    unsubscribe_closes_channel: bool = True
    unanswered_streak: StreakDoc = StreakDoc()
    reply_latency_slowdown: LatencySlowdownDoc = LatencySlowdownDoc()
    response_rate_drop: RateDropDoc = RateDropDoc()
    engagement_drop: RateDropDoc = RateDropDoc(
        kinds=[ResponseKind.OPEN, ResponseKind.CLICK], recent_touches=10, min_baseline_touches=10, drop=0.15
    )


class CooldownsDoc(_Strict):
    """Against flapping and repeated pings, on top of each rule's hysteresis."""

    min_throttle: Duration = "1d"
    """A throttle lasts at least this long, even when its conditions clear sooner."""
    re_engage: Duration = "7d"
    """At most one re_engage per customer within this period (a repeat becomes dormant silently)."""
    throttle_update: Duration = "7d"
    """At most one throttle update (escalation) per rule within this period."""

    @field_validator("min_throttle", "re_engage", "throttle_update")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value)


class SegmentFrequencyDoc(_Strict):
    warn_above: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    throttle_above: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    recover_at_or_below: int | None = Field(default=None, ge=0, le=MAX_COUNT)


class SegmentDoc(_Strict):
    """Overrides for customers of one tier and/or stage (the most specific segment wins)."""

    tier: Tier | None = None
    stage: Stage | None = None
    frequency: SegmentFrequencyDoc = SegmentFrequencyDoc()
    cadence: Duration | None = None
    weekly_cap: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, value: str | None) -> str | None:
        return None if value is None else _check_duration(value)

    @model_validator(mode="after")
    def _selects(self) -> SegmentDoc:
        if self.tier is None and self.stage is None:
            raise ValueError("a segment needs a tier, a stage or both")
        return self


class PolicyDoc(_Strict):
    version: int = 1
    windows: list[str] = ["24h", "7d", "30d", "90d"]
    grace: str = "7d"
    frequency: FrequencyDoc = FrequencyDoc()
    cadence: CadenceDoc = CadenceDoc()
    reply_latency: ReplyLatencyDoc = ReplyLatencyDoc()
    signals: SignalsDoc = SignalsDoc()
    sending: SendingDoc = SendingDoc()
    cooldowns: CooldownsDoc = CooldownsDoc()
    segments: list[SegmentDoc] = []

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"policy version {value} is not supported (this build reads version 1)")
        return value

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window is needed")
        if len(value) > MAX_WINDOWS:
            raise ValueError(f"at most {MAX_WINDOWS} windows (each is counted per channel and kind)")
        for label in value:
            _check_duration(label)
        if len(set(value)) != len(value):
            raise ValueError("windows must not repeat")
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("segments")
    @classmethod
    def _few_segments(cls, value: list[SegmentDoc]) -> list[SegmentDoc]:
        if len(value) > MAX_LIST:
            raise ValueError(f"at most {MAX_LIST} segments")
        return value

    @model_validator(mode="after")
    def _segments_are_consistent(self) -> PolicyDoc:
        seen = set()
        for i, segment in enumerate(self.segments):
            key = (segment.tier, segment.stage)
            if key in seen:
                raise ValueError(f"segments[{i}] repeats tier {segment.tier} / stage {segment.stage}")
            seen.add(key)
            throttle = segment.frequency.throttle_above or self.frequency.throttle_above
            recover = segment.frequency.recover_at_or_below
            recover = self.frequency.recover_at_or_below if recover is None else recover
            if recover >= throttle:
                raise ValueError(f"segments[{i}]: recover_at_or_below ({recover}) must be below "
                                 f"throttle_above ({throttle}), or throttling would flap")
            warn = segment.frequency.warn_above
            if warn is not None and warn > throttle:
                raise ValueError(f"segments[{i}]: warn_above ({warn}) must not exceed throttle_above ({throttle})")
        return self

    @model_validator(mode="after")
    def _frequency_window(self) -> PolicyDoc:
        if self.frequency.window not in self.windows:
            raise ValueError(f"frequency.window {self.frequency.window!r} must be one of windows {self.windows}")
        return self
