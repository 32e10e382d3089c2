"""The fatigue policy the core computes with: windows, frequency band, cadence, signals, sending
rules, cooldowns and segments — parsed from YAML, validated (services/policy/schema.py) and turned
into plain values in the units the core uses.

Defaults come from DOMAIN.md (services/policy/policy.yaml). An invalid document raises PolicyError naming
the field and, where the YAML parser knows it, the line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.durations import parse_duration_ms
from services.errors import ConfigError, PolicyError
from services.policy.schema import (
    DEFAULT_WARN_ABOVE,
    PolicyDoc,
    RateDropDoc,
    SegmentDoc,
    SendingDoc,
    SignalsDoc,
)

__all__ = ["DEFAULT_POLICY_FILE", "Policy", "PolicyDoc", "RateDrop", "Window", "default_policy", "load_policy",
           "parse_policy"]


def _rest_ms(value: str | None) -> int | None:
    return None if value is None else parse_duration_ms(value)


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
    rest_ms: int | None = 14 * 24 * 3_600_000

    @classmethod
    def from_doc(cls, doc: RateDropDoc) -> RateDrop:
        kinds = None if doc.kinds is None else frozenset(str(k) for k in doc.kinds)
        return cls(doc.enabled, kinds, doc.recent_touches, doc.min_baseline_touches,
                   parse_duration_ms(doc.settle), doc.drop, _rest_ms(doc.rest))


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
    streak_rest_ms: int | None = 14 * 24 * 3_600_000
    latency_rest_ms: int | None = 14 * 24 * 3_600_000

    def rest_ms(self, rule: str) -> int | None:
        """How long without touches ends a throttle held by `rule` (None: only a response does)."""
        return {
            "unanswered_streak": self.streak_rest_ms,
            "reply_latency_slowdown": self.latency_rest_ms,
            "response_rate_drop": self.response_rate.rest_ms,
            "engagement_drop": self.engagement.rest_ms,
        }[rule]

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
            streak_rest_ms=_rest_ms(doc.unanswered_streak.rest),
            latency_rest_ms=_rest_ms(lat.rest),
        )


@dataclass(frozen=True)
class QuietPeriod:
    after: frozenset[str]
    channel: str
    pause: frozenset[str]
    duration: Window


@dataclass(frozen=True)
class QuietHours:
    """No touch on `channels` while the customer's local wall clock is in [start, end) minutes."""

    channels: frozenset[str]
    start_minute: int
    end_minute: int


@dataclass(frozen=True)
class Sending:
    weekly_cap_default: int
    weekly_cap_by_stage: dict[str, int]
    min_gap_default_ms: int
    min_gap_by_channel_ms: dict[str, int]
    quiet_periods: tuple[QuietPeriod, ...]
    quiet_hours: tuple[QuietHours, ...] = ()
    same_campaign_gap: Window | None = Window("7d", 7 * 24 * 3_600_000)

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
            quiet_hours=tuple(QuietHours(frozenset(str(c) for c in q.channels), *q.minutes()) for q in doc.quiet_hours),
            same_campaign_gap=None if doc.same_campaign_gap is None else Window(
                doc.same_campaign_gap, parse_duration_ms(doc.same_campaign_gap)),
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
    cadence_tolerance_ms: int = 24 * 3_600_000
    escalation_factor: float = 2.0
    throttle_update_cooldown_ms: int = 7 * 24 * 3_600_000
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

    @cached_property
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
            cadence_tolerance_ms=parse_duration_ms(doc.cadence.tolerance, allow_zero=True),
            escalation_factor=doc.frequency.escalation_factor,
            throttle_update_cooldown_ms=parse_duration_ms(doc.cooldowns.throttle_update),
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


MAX_YAML_DEPTH = 16
MAX_YAML_ALIASES = 100


def check_yaml_shape(text: str, source: str) -> None:
    """Refuse a document nested deeper than MAX_YAML_DEPTH or with many aliases, before it is built
    (PyYAML builds nested nodes recursively). Reads the event stream, which does not recurse."""
    depth = aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    line = event.start_mark.line + 1
                    raise PolicyError(f"{source}:{line}: nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise PolicyError(f"{source}: more than {MAX_YAML_ALIASES} aliases (*name)")
    except yaml.YAMLError:
        return  # reported with its line by the parse that follows


NO_SETTINGS = ("the document holds no settings (it is empty or only comments; `curl -d` strips the newlines of a "
               "file, which turns it into one comment line: send it with --data-binary); send {} for all defaults")


def parse_policy(text: str, source: str = "policy", *, empty_means_defaults: bool = True) -> Policy:
    """Parse and validate a policy YAML document; PolicyError says where and why.

    A document without any node (empty, or only comments) is the default policy for a policy file;
    with `empty_means_defaults=False` (a body sent to the API) it is a PolicyError: such a body is
    almost always a mistake (`curl -d @policy.yaml` makes one comment line of a whole file)."""
    check_yaml_shape(text, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None and yaml.compose(text) is None:  # no node at all: empty, or only comments
        if not empty_means_defaults:
            raise PolicyError(f"{source}: {NO_SETTINGS}")
        data = {}
    if not isinstance(data, dict):
        what = "null" if data is None else type(data).__name__
        raise PolicyError(f"{source}: the policy must be a mapping of settings, not {what}")
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


PolicyCheck = Callable[[Policy], None]
"""A check a policy must pass before it is accepted: the scorer's dry run through its core (raises
PolicyError). The `fatigue` command gives it to the API, which may not import the scorer."""


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
