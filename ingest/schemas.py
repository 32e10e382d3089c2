"""Request and response models of the HTTP API (the event and profile inputs live in services.contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.contract import Identifier
from services.names import ACTION_TYPES

ActionType = Literal[ACTION_TYPES]  # type: ignore[valid-type]
"""fatigue.throttle | fatigue.re_engage | fatigue.recovered"""

MAX_URL_CHARS = 2048

CustomerId = Annotated[Identifier, Path(description="Letters, digits and . _ : @ + - (1-200 characters).")]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["broker_unavailable"])
    message: str = Field(examples=["the event log did not acknowledge the write, nothing was stored: ..."])


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


# ---- events ----


class RejectedItem(BaseModel):
    index: int = Field(description="Position of the item in the request (0 for a single object).")
    error: str = Field(examples=["channel: 'fax' is not one of email, sms, phone, wechat, wecom, ..."])


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events acknowledged by the event log in this request.")
    duplicates: int = Field(description="Valid events not published again (event_id already accepted).")
    rejected: list[RejectedItem] = Field(description="Invalid items; nothing of them was stored.")


class EventsRejected(EventsAccepted):
    """422: no item of the request was valid."""

    error: ErrorDetail


# ---- profiles ----


class ProfileAccepted(BaseModel):
    customer_id: str
    accepted: Literal[True] = True


# ---- customers ----


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class CountsOut(_Open):
    total: int = 0
    by_channel: dict[str, int] = Field(default_factory=dict)
    by_kind: dict[str, int] = Field(default_factory=dict)


class WindowOut(_Open):
    touches: CountsOut = Field(default_factory=CountsOut)
    responses: CountsOut = Field(default_factory=CountsOut)


class ReplyLatencyOut(_Open):
    last_s: float | None = Field(default=None, description="Latency of the latest reply to a touch.")
    median_s: float | None = Field(default=None, description="Median over the retained samples.")
    samples: int = 0


class FrequencyOut(_Open):
    window: str = Field(description="The window the frequency rule counts in, e.g. 7d.")
    counted_touches: int = Field(description="Touches counted by the rule (some kinds may be exempt).")
    throttle_above: float
    recover_at_or_below: float


class LastActionOut(_Open):
    action_id: str
    type: str = Field(examples=list(ACTION_TYPES))
    at: datetime
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    suggestion: str | None = None


class DecisionOut(BaseModel):
    """May this customer be touched on this channel now (GET /v1/customers/{id}/decision)."""

    customer_id: str
    channel: str
    kind: str | None
    decision: str = Field(description="allow | defer | deny", examples=["defer"])
    next_allowed_at: datetime | None = Field(
        default=None, description="For `defer`: when the touch would be allowed; null when not at a known time."
    )
    reasons: list[dict[str, Any]] = Field(description="Every rule that decided, with its numbers.")
    counts: dict[str, Any]
    evaluated_at: datetime
    snapshot_as_of: datetime | None
    policy_version: int | None = Field(description="The stored policy applied; null for the packaged default.")


class CustomerStateOut(_Open):
    """The scorer's snapshot of one customer. Fields may be added over time; clients ignore unknown ones."""

    customer_id: str
    status: str = Field(description="normal | throttled | dormant", examples=["throttled"])
    status_since: datetime | None = None
    as_of: datetime | None = Field(default=None, description="The time the counts below refer to.")
    profile: dict[str, Any] | None = None
    windows: dict[str, WindowOut] = Field(
        default_factory=dict, description='Rolling windows by name, e.g. "24h", "7d", "30d".'
    )
    frequency: FrequencyOut | None = None
    reply_latency: ReplyLatencyOut = Field(default_factory=ReplyLatencyOut)
    first_seen_at: datetime | None = None
    last_touch_at: datetime | None = None
    last_response_at: datetime | None = None
    next_check_at: datetime | None = Field(default=None, description="When the scorer re-evaluates on its own.")
    last_action: LastActionOut | None = None
    events_counted: int | None = None


# ---- subscriptions ----


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, examples=["https://hooks.example.com/fatigue"])
    events: list[ActionType] = Field(
        default_factory=lambda: list(ACTION_TYPES), min_length=1, description="Action types to deliver."
    )

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="Standard Webhooks signing secret (whsec_...). Shown only in this answer; store it."
    )


# ---- policy ----


class PolicyOut(BaseModel):
    """The fatigue policy: the one stored through the API, or the packaged default when none is."""

    version: int | None = Field(
        description="Version of the stored policy (use it in If-Match); null when none is stored.", examples=[3]
    )
    source: Literal["api", "default"] = Field(
        description="api: stored through PUT /v1/policy. default: nothing stored, the packaged default is shown "
        "(a scorer started with FATIGUE_POLICY_FILE uses that file instead)."
    )
    updated_at: datetime | None = Field(description="When the stored policy was written; null for the default.")
    sha256: str = Field(description="SHA-256 of the YAML text (hex).")
    yaml: str = Field(description="The policy document exactly as stored (comments kept).")
    policy: dict[str, Any] | None = Field(
        description="The effective settings, defaults filled in (see docs/policy.md); null when the stored "
        "document is invalid (see `problem`)."
    )
    problem: str | None = Field(
        default=None,
        description="Why the stored document is invalid (it was written to Redis by hand, not through the API); "
        "the scorer keeps its previous policy until a valid one is PUT.",
    )
