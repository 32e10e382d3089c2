"""The fatigue policy: windows, frequency band, cadence per stage — loaded from YAML and validated.

Defaults come from DOMAIN.md (scorer/policy.yaml). An invalid document raises PolicyError naming
the field and, where the YAML parser knows it, the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.contract import Channel, ResponseKind, Stage, Tier, TouchKind
from services.durations import parse_duration_ms
from services.errors import ConfigError, PolicyError

K = TypeVar("K")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_duration(value: str) -> str:
    parse_duration_ms(value)
    return value


def _check_durations(mapping: dict[K, str]) -> dict[K, str]:
    """Every value a duration; the error names the key."""
    for key, duration in mapping.items():
        try:
            parse_duration_ms(duration)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return mapping


DEFAULT_WARN_ABOVE = 8


class FrequencyDoc(_Strict):
    window: str = "30d"
    warn_above: int | None = Field(default=None, ge=0)
    """Decision warns above this; unset: 8 (the "tends to annoy" band), or throttle_above if lower."""
    throttle_above: int = Field(default=12, ge=0)
    recover_at_or_below: int = Field(default=8, ge=0)
    uncounted_kinds: list[TouchKind] = [TouchKind.TRANSACTIONAL]

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


class SendingDoc(_Strict):
    """Rules the pre-send decision applies on top of the customer's status."""

    weekly_cap_default: int = Field(default=3, ge=0)
    weekly_cap_by_stage: dict[Stage, int] = DOMAIN_WEEKLY_CAPS
    min_gap_default: str = "4h"
    min_gap_by_channel: dict[Channel, str] = DOMAIN_MIN_GAPS
    quiet_periods: list[QuietPeriodDoc] = DOMAIN_QUIET_PERIODS

    @field_validator("min_gap_default")
    @classmethod
    def _gap(cls, value: str) -> str:
        return _check_duration(value)

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

    @field_validator("default", "silence")
    @classmethod
    def _default(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("by_stage")
    @classmethod
    def _by_stage(cls, value: dict[Stage, str]) -> dict[Stage, str]:
        return _check_durations(value)


class ReplyLatencyDoc(_Strict):
    kinds: list[ResponseKind] = [ResponseKind.REPLY, ResponseKind.CALL_ANSWERED]
    max_samples: int = Field(default=50, ge=1, le=1000)


Duration = str
"""A duration as written in the policy: `90s`, `30m`, `24h`, `7d`, `2w` (validated where used)."""


class ComplaintDoc(_Strict):
    enabled: bool = True
    cool_off: Duration = "30d"

    @field_validator("cool_off")
    @classmethod
    def _cool_off(cls, value: str) -> str:
        return _check_duration(value)


class StreakDoc(_Strict):
    enabled: bool = True
    touches: int = Field(default=5, ge=1)


class LatencySlowdownDoc(_Strict):
    enabled: bool = True
    recent: int = Field(default=3, ge=1)
    baseline_window: Duration = "90d"
    min_baseline_samples: int = Field(default=5, ge=1)
    slowdown_factor: float = Field(default=2.0, gt=1)
    recover_factor: float = Field(default=1.5, ge=1)

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
    recent_touches: int = Field(default=5, ge=1)
    min_baseline_touches: int = Field(default=10, ge=1)
    settle: Duration = "3d"
    """Touches younger than this have not had time to be answered and are left out."""
    drop: float = Field(default=0.5, gt=0, lt=1)
    """Fires when the recent rate is at least this fraction below the baseline rate."""

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

    @field_validator("min_throttle", "re_engage")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _check_duration(value)


class SegmentFrequencyDoc(_Strict):
    warn_above: int | None = Field(default=None, ge=0)
    throttle_above: int | None = Field(default=None, ge=0)
    recover_at_or_below: int | None = Field(default=None, ge=0)


class SegmentDoc(_Strict):
    """Overrides for customers of one tier and/or stage (the most specific segment wins)."""

    tier: Tier | None = None
    stage: Stage | None = None
    frequency: SegmentFrequencyDoc = SegmentFrequencyDoc()
    cadence: Duration | None = None
    weekly_cap: int | None = Field(default=None, ge=0)

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
        for label in value:
            _check_duration(label)
        if len(set(value)) != len(value):
            raise ValueError("windows must not repeat")
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        return _check_duration(value)

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


@dataclass(frozen=True)
class Window:
    label: str
    ms: int


@dataclass(frozen=True)
class RateDrop:
    enabled: bool
    kinds: frozenset[str] | None
    recent_touches: int
    min_baseline_touches: int
    settle_ms: int
    drop: float

    @classmethod
    def from_doc(cls, doc: RateDropDoc) -> RateDrop:
        kinds = None if doc.kinds is None else frozenset(str(k) for k in doc.kinds)
        return cls(doc.enabled, kinds, doc.recent_touches, doc.min_baseline_touches,
                   parse_duration_ms(doc.settle), doc.drop)


@dataclass(frozen=True)
class Signals:
    """Response-aware fatigue signals, each with its own setting (docs/policy.md)."""

    complaint_enabled: bool
    complaint_cool_off: Window
    unsubscribe_closes_channel: bool
    streak_enabled: bool
    streak_touches: int
    latency_enabled: bool
    latency_recent: int
    latency_baseline: Window
    latency_min_baseline_samples: int
    latency_slowdown_factor: float
    latency_recover_factor: float
    response_rate: RateDrop
    engagement: RateDrop

    @classmethod
    def from_doc(cls, doc: SignalsDoc) -> Signals:
        lat = doc.reply_latency_slowdown
        return cls(
            complaint_enabled=doc.complaint.enabled,
            complaint_cool_off=Window(doc.complaint.cool_off, parse_duration_ms(doc.complaint.cool_off)),
            unsubscribe_closes_channel=doc.unsubscribe_closes_channel,
            streak_enabled=doc.unanswered_streak.enabled,
            streak_touches=doc.unanswered_streak.touches,
            latency_enabled=lat.enabled,
            latency_recent=lat.recent,
            latency_baseline=Window(lat.baseline_window, parse_duration_ms(lat.baseline_window)),
            latency_min_baseline_samples=lat.min_baseline_samples,
            latency_slowdown_factor=lat.slowdown_factor,
            latency_recover_factor=lat.recover_factor,
            response_rate=RateDrop.from_doc(doc.response_rate_drop),
            engagement=RateDrop.from_doc(doc.engagement_drop),
        )


@dataclass(frozen=True)
class QuietPeriod:
    after: frozenset[str]
    channel: str
    pause: frozenset[str]
    duration: Window


@dataclass(frozen=True)
class Sending:
    weekly_cap_default: int
    weekly_cap_by_stage: dict[str, int]
    min_gap_default_ms: int
    min_gap_by_channel_ms: dict[str, int]
    quiet_periods: tuple[QuietPeriod, ...]

    def weekly_cap(self, stage: str | None) -> int:
        return self.weekly_cap_by_stage.get(stage or "", self.weekly_cap_default)

    def min_gap_ms(self, channel: str) -> int:
        return self.min_gap_by_channel_ms.get(channel, self.min_gap_default_ms)

    @classmethod
    def from_doc(cls, doc: SendingDoc) -> Sending:
        return cls(
            weekly_cap_default=doc.weekly_cap_default,
            weekly_cap_by_stage={str(s): n for s, n in doc.weekly_cap_by_stage.items()},
            min_gap_default_ms=parse_duration_ms(doc.min_gap_default),
            min_gap_by_channel_ms={str(c): parse_duration_ms(d) for c, d in doc.min_gap_by_channel.items()},
            quiet_periods=tuple(
                QuietPeriod(frozenset(str(k) for k in q.after), str(q.channel), frozenset(str(c) for c in q.pause),
                            Window(q.for_, parse_duration_ms(q.for_)))
                for q in doc.quiet_periods
            ),
        )


@dataclass(frozen=True)
class Policy:
    """The validated policy in the units the core computes with."""

    windows: tuple[Window, ...]
    grace_ms: int
    frequency_window: Window
    throttle_above: int
    recover_at_or_below: int
    uncounted_kinds: frozenset[str]
    cadence_default_ms: int
    cadence_by_stage_ms: dict[str, int]
    reply_kinds: frozenset[str]
    max_latency_samples: int
    signals: Signals
    sending: Sending
    warn_above: int
    silence_ms: int = 90 * 24 * 3_600_000
    min_throttle_ms: int = 24 * 3_600_000
    re_engage_cooldown_ms: int = 7 * 24 * 3_600_000
    segments: tuple[SegmentDoc, ...] = ()
    _resolved: dict[tuple[str | None, str | None], Policy] = field(default_factory=dict, compare=False, repr=False)

    def for_profile(self, profile: Mapping[str, Any] | None) -> Policy:
        """The policy for a customer: the most specific matching segment's overrides applied."""
        if not self.segments:
            return self
        tier, stage = (profile or {}).get("tier"), (profile or {}).get("stage")
        key = (tier, stage)
        if key not in self._resolved:
            self._resolved[key] = self._apply(self._segment_for(tier, stage), stage)
        return self._resolved[key]

    def _segment_for(self, tier: str | None, stage: str | None) -> SegmentDoc | None:
        matches = [
            s for s in self.segments
            if (s.tier is None or s.tier == tier) and (s.stage is None or s.stage == stage)
        ]
        # tier + stage beats stage alone beats tier alone; among equals the first listed wins.
        return min(matches, key=lambda s: -(2 * (s.stage is not None) + (s.tier is not None)), default=None)

    def _apply(self, segment: SegmentDoc | None, stage: str | None) -> Policy:
        if segment is None:
            return replace(self, segments=(), _resolved={})
        f = segment.frequency
        throttle = self.throttle_above if f.throttle_above is None else f.throttle_above
        cadence_default, cadence_by_stage = self.cadence_default_ms, self.cadence_by_stage_ms
        sending = self.sending
        if segment.cadence is not None:
            cadence_ms = parse_duration_ms(segment.cadence)
            cadence_default = cadence_ms
            cadence_by_stage = {**cadence_by_stage, **({stage: cadence_ms} if stage else {})}
        if segment.weekly_cap is not None:
            by_stage = {**sending.weekly_cap_by_stage, **({stage: segment.weekly_cap} if stage else {})}
            sending = replace(sending, weekly_cap_default=segment.weekly_cap, weekly_cap_by_stage=by_stage)
        return replace(
            self,
            throttle_above=throttle,
            recover_at_or_below=self.recover_at_or_below if f.recover_at_or_below is None else f.recover_at_or_below,
            warn_above=min(self.warn_above, throttle) if f.warn_above is None else f.warn_above,
            cadence_default_ms=cadence_default,
            cadence_by_stage_ms=cadence_by_stage,
            sending=sending,
            segments=(),
            _resolved={},
        )

    @property
    def retention_ms(self) -> int:
        return max(w.ms for w in self.windows)

    def cadence_ms(self, stage: str | None) -> int:
        if stage is None:
            return self.cadence_default_ms
        return self.cadence_by_stage_ms.get(stage, self.cadence_default_ms)

    @classmethod
    def from_doc(cls, doc: PolicyDoc) -> Policy:
        windows = tuple(Window(label, parse_duration_ms(label)) for label in doc.windows)
        return cls(
            windows=windows,
            grace_ms=parse_duration_ms(doc.grace),
            frequency_window=next(w for w in windows if w.label == doc.frequency.window),
            throttle_above=doc.frequency.throttle_above,
            recover_at_or_below=doc.frequency.recover_at_or_below,
            uncounted_kinds=frozenset(str(k) for k in doc.frequency.uncounted_kinds),
            cadence_default_ms=parse_duration_ms(doc.cadence.default),
            cadence_by_stage_ms={str(s): parse_duration_ms(d) for s, d in doc.cadence.by_stage.items()},
            reply_kinds=frozenset(str(k) for k in doc.reply_latency.kinds),
            max_latency_samples=doc.reply_latency.max_samples,
            signals=Signals.from_doc(doc.signals),
            sending=Sending.from_doc(doc.sending),
            warn_above=(
                min(DEFAULT_WARN_ABOVE, doc.frequency.throttle_above)
                if doc.frequency.warn_above is None
                else doc.frequency.warn_above
            ),
            silence_ms=parse_duration_ms(doc.cadence.silence),
            min_throttle_ms=parse_duration_ms(doc.cooldowns.min_throttle),
            re_engage_cooldown_ms=parse_duration_ms(doc.cooldowns.re_engage),
            segments=tuple(doc.segments),
        )


def _line_of(text: str, path: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a field path in a YAML document."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for part in path:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next((v for k, v in node.value if k.value == str(part)), None)
        if match is None:
            break
        node = match
    return node.start_mark.line + 1 if node is not None else None


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse and validate a policy YAML document; PolicyError says where and why."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a mapping of settings, not {type(data).__name__}")
    try:
        return Policy.from_doc(PolicyDoc.model_validate(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = tuple(err["loc"])
            line = _line_of(text, path)
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in path) or "(document)"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {field}: {message}")
        raise PolicyError("; ".join(problems)) from exc


def default_policy() -> Policy:
    return Policy.from_doc(PolicyDoc())


DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")
"""The packaged default policy, with comments; equal to `default_policy()`."""


def load_policy(path: Path | None) -> Policy:
    """Read and validate a policy file (the packaged default when `path` is None)."""
    path = path or DEFAULT_POLICY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    return parse_policy(text, source=str(path))
