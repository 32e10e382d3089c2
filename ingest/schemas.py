"""Request and response models of the HTTP API (the event and profile inputs live in services.contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from services.contract import FreeId, Identifier, Stage, Tier
from services.delivery.subscriptions import FORMATS, PROVIDER_SECRET_FORMATS
from services.names import ACTION_DIGEST, ACTION_THROTTLE, ACTION_TYPES, CUSTOMER_LISTS

ActionType = Literal[ACTION_TYPES]  # type: ignore[valid-type]
TestType = Literal[(*ACTION_TYPES, ACTION_DIGEST)]  # type: ignore[valid-type]
"""fatigue.throttle | fatigue.re_engage | fatigue.recovered"""

MAX_URL_CHARS = 2048

CustomerId = Annotated[Identifier, Path(description="Letters, digits and . _ : @ + - (1-200 characters).")]


class ErrorCode(StrEnum):
    """Every `error.code` the API answers with (stable: clients may branch on it)."""

    ALL_EVENTS_REJECTED = "all_events_rejected"
    BAD_REQUEST = "bad_request"
    BAD_SNAPSHOT = "bad_snapshot"
    BROKER_UNAVAILABLE = "broker_unavailable"
    CONFLICT = "conflict"
    DESTINATION_REFUSED = "destination_refused"
    DESTINATION_UNRESOLVABLE = "destination_unresolvable"
    ERROR = "error"
    EVENTS_IN_FLIGHT = "events_in_flight"
    FORBIDDEN = "forbidden"
    INTERNAL_ERROR = "internal_error"
    INVALID_BODY = "invalid_body"
    INVALID_JSON = "invalid_json"
    INVALID_POLICY = "invalid_policy"
    INVALID_REQUEST = "invalid_request"
    JSON_TOO_DEEP = "json_too_deep"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PRECONDITION_FAILED = "precondition_failed"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"
    SUBSCRIPTION_DISABLED = "subscription_disabled"
    TOO_MANY_EVENTS = "too_many_events"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


def _rfc3339_ms(moment: datetime) -> str:
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    PlainSerializer(_rfc3339_ms, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-23T09:30:00.000Z"]},
                   mode="serialization"),
]
"""Every timestamp the API answers with has one form: RFC 3339 in UTC with milliseconds
(`2026-11-23T09:30:00.000Z`), the form of the snapshots and actions the scorer writes."""


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(examples=["broker_unavailable"])
    message: str = Field(examples=["the event log did not acknowledge the write, nothing was stored: ..."])


class ErrorOut(BaseModel):
    """The body of every error answer (403 adds `required_scope`)."""

    model_config = ConfigDict(extra="allow")

    error: ErrorDetail


# ---- events ----


class RejectedItem(BaseModel):
    index: int = Field(description="Position of the item in the request (0 for a single object).")
    error: str = Field(examples=["channel: 'fax' is not one of email, sms, phone, wechat, wecom, ..."])


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events acknowledged by the event log in this request.")
    duplicates: int = Field(description="Valid events not published again (event_id already accepted).")
    rejected: list[RejectedItem] = Field(description="Invalid items; nothing of them was stored.")


class EventsRejected(BaseModel):
    """422: no item of the request was valid (`rejected` says why, item by item), or the body is not an
    event or a list of events (then only `error`)."""

    error: ErrorDetail
    accepted: int = Field(default=0, description="Always 0: nothing was stored.")
    duplicates: int = Field(default=0, description="Always 0.")
    rejected: list[RejectedItem] = Field(default_factory=list, description="Why each item was refused.")


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
    at: Timestamp
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    suggestion: str | None = None


class DecisionOut(BaseModel):
    """May this customer be touched on this channel now (GET /v1/customers/{id}/decision)."""

    customer_id: str
    channel: str
    kind: str | None
    decision: str = Field(description="allow | defer | deny", examples=["defer"])
    next_allowed_at: Timestamp | None = Field(
        default=None, description="For `defer`: when the touch would be allowed; null when not at a known time."
    )
    reasons: list[dict[str, Any]] = Field(description="Every rule that decided, with its numbers.")
    counts: dict[str, Any]
    evaluated_at: Timestamp
    snapshot_as_of: Timestamp | None
    policy_version: int | None = Field(description="The stored policy applied; null for the packaged default.")


class CustomerStateOut(_Open):
    """The scorer's snapshot of one customer. Fields may be added over time; clients ignore unknown ones."""

    customer_id: str
    status: str = Field(description="normal | throttled | dormant", examples=["throttled"])
    status_since: Timestamp | None = None
    as_of: Timestamp | None = Field(default=None, description="The time the counts below refer to.")
    profile: dict[str, Any] | None = None
    windows: dict[str, WindowOut] = Field(
        default_factory=dict, description='Rolling windows by name, e.g. "24h", "7d", "30d".'
    )
    frequency: FrequencyOut | None = None
    reply_latency: ReplyLatencyOut = Field(default_factory=ReplyLatencyOut)
    first_seen_at: Timestamp | None = None
    last_touch_at: Timestamp | None = None
    last_response_at: Timestamp | None = None
    next_check_at: Timestamp | None = Field(default=None, description="When the scorer re-evaluates on its own.")
    last_action: LastActionOut | None = None
    events_counted: int | None = None
    lifecycle: dict[str, Any] | None = Field(
        default=None, description="Where the customer is in the lifecycle: state (normal | throttled | cooling_off | "
        "to_activate), list, since, reasons, until, next_step (docs/api.md).")


# ---- customer lists (GET /v1/customers?list=...) ----

ListName = Literal[CUSTOMER_LISTS]  # type: ignore[valid-type]
"""cooling_off | to_activate | throttled"""


class NextStepOut(BaseModel):
    channel: str | None = Field(description="The open channel the customer answers on most; null when not known.")
    best_time: dict[str, str] | None = Field(
        description="Their golden hour of the week on their own clock, e.g. {\"local\": \"Thu 15:00\", "
        "\"timezone\": \"Asia/Shanghai\"}; null with fewer than 3 answers.")


class CustomerListItemOut(BaseModel):
    """One customer on a list: who, why, since when, what to do next and when."""

    model_config = ConfigDict(populate_by_name=True)

    customer_id: str
    list_name: str = Field(alias="list", description="The list: throttled | cooling_off | to_activate.")
    status: str = Field(description="normal | throttled | dormant (as on GET /v1/customers/{id})")
    state: str = Field(description="The lifecycle state: throttled | cooling_off | to_activate.")
    since: Timestamp | None = Field(description="When the customer entered this state.")
    overdue_since: Timestamp | None = Field(description="to_activate: since when the customer is overdue.")
    until: Timestamp | None = Field(
        description="throttled, cooling_off: when the state ends if nobody touches the customer; null when only "
        "a response ends it.")
    reasons: list[dict[str, Any]] = Field(description="Every reason holding now (rule, window, observed, threshold).")
    next_step: NextStepOut
    next_allowed_at: Timestamp | None = Field(
        description="When the next step (its channel) is allowed by the pre-send decision: now when it is "
        "allowed now; null when only a response ends the hold.")
    suggestion: str | None = Field(description="The suggestion of the latest action for the customer.")
    owner_rep_id: str | None
    tier: str | None
    stage: str | None


class CustomerListOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    list_name: str = Field(alias="list")
    items: list[CustomerListItemOut] = Field(description="Most urgent first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    evaluated_at: Timestamp
    policy_version: int | None = Field(description="The stored policy applied to next_allowed_at; null: default.")


# ---- subscriptions ----


MAX_FILTER_VALUES = 1000
MAX_DESCRIPTION_CHARS = 200
MAX_OVERLAP_S = 7 * 86400
DEFAULT_OVERLAP_S = 86400

Format = Literal[FORMATS]  # type: ignore[valid-type]
"""standard | slack | teams | wecom | feishu | dingtalk"""

ProviderSecret = Annotated[str, StringConstraints(min_length=8, max_length=256)]


def _unique_values(value: list[Any]) -> list[Any]:
    return list(dict.fromkeys(value))


MAX_MENTIONS = 500
MAX_CHAT_USER_ID_CHARS = 200
MAX_OWNER_REP_ID_CHARS = 200  # services.contract.FreeId
_SLACK_CONTROL = set("<>|&")


def _chat_user_id(value: str) -> str:
    """Put into chat markup as is (Slack `<@…>`, Feishu `<at id=…>`, WeCom `<@…>`): nothing that could end it."""
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain spaces, line breaks or control characters")
    if _SLACK_CONTROL & set(value):
        raise ValueError("must not contain < > | or &")
    return value


def _mention_keys(value: Any) -> Any:
    """Keys follow the owner rep id rule (filters.owner_rep_ids); said here, as a key's path would be unreadable."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_OWNER_REP_ID_CHARS:
                shown = key if len(str(key)) <= 40 else str(key)[:39] + "…"
                raise ValueError(f"key {shown!r} is not an owner rep id (1-{MAX_OWNER_REP_ID_CHARS} characters)")
    return value


ChatUserId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CHAT_USER_ID_CHARS), AfterValidator(_chat_user_id)
]
"""A user id in the chat tool: Slack U…, Teams Entra object id or UPN, WeCom userid, Feishu open_id, DingTalk userId."""

Mentions = Annotated[
    dict[FreeId, ChatUserId],
    Field(
        max_length=MAX_MENTIONS,
        description="Owner rep id -> the chat tool's user id: chat messages @-mention the owner rep "
        f"(at most {MAX_MENTIONS}; no effect on format standard).",
        examples=[{"alice": "U024BE7LH"}],
    ),
    BeforeValidator(_mention_keys),  # after Field, or the limit shows as maxLength in the OpenAPI schema
]


def _no_whitespace(value: str | None) -> str | None:
    if value is not None and any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces or line breaks; paste the secret exactly as the bot shows it")
    return value


class FiltersIn(BaseModel):
    """Deliver only actions whose customer matches every non-empty list (empty: no restriction)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    tiers: list[Tier] = Field(default_factory=list, max_length=MAX_FILTER_VALUES, examples=[["A"]])
    stages: list[Stage] = Field(default_factory=list, max_length=MAX_FILTER_VALUES, examples=[["negotiation"]])
    owner_rep_ids: list[FreeId] = Field(default_factory=list, max_length=MAX_FILTER_VALUES, examples=[["alice"]])
    customer_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)

    _dedupe = field_validator("tiers", "stages", "owner_rep_ids", "customer_ids")(_unique_values)


class DigestIn(BaseModel):
    """Storm limit per owner rep: the first `after` alerts for one rep in each clock-aligned window of
    `window_minutes` go out one by one; the rest come as one digest when the window ends."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(default=5, ge=1, le=1000, description="Alerts per rep and window sent on their own.")
    window_minutes: int = Field(default=10, ge=1, le=1440, description="Window length in minutes (clock-aligned).")


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, examples=["https://hooks.example.com/fatigue"])
    events: list[ActionType] = Field(
        default_factory=lambda: list(ACTION_TYPES), min_length=1, description="Action types to deliver."
    )
    format: Format = Field(default="standard", description="Body format: Standard Webhooks JSON or a chat bot's.")
    filters: FiltersIn = Field(default_factory=FiltersIn)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, description="At most this many deliveries a minute.")
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    digest: DigestIn | None = Field(
        default=None,
        description="Per-rep storm limit. Left out: chat formats get {after: 5, window_minutes: 10}, standard "
        "none; null: every alert on its own.",
    )
    secret: ProviderSecret | None = Field(
        default=None,
        description="Only for feishu/dingtalk: the signing secret the bot shows. Otherwise one is generated.",
    )
    mentions: Mentions = Field(default_factory=dict)

    _dedupe = field_validator("events")(_unique_values)

    @field_validator("secret")
    @classmethod
    def _provider_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("format") not in PROVIDER_SECRET_FORMATS:
            raise ValueError(
                f"may only be given for format {' or '.join(PROVIDER_SECRET_FORMATS)} (their bot issues the secret); "
                "other formats get a generated whsec_ secret"
            )
        return _no_whitespace(value)


class SubscriptionPatch(BaseModel):
    """Fields left out stay as they are; `null` clears `rate_limit_per_minute`, `description`, `digest`
    and `mentions` (which is replaced as a whole when given).

    `enabled: true` re-enables a subscription (disabled by the notifier or by hand) and forgets its
    endpoint's failures; `enabled: false` disables it: its deliveries are dead-lettered unsent until
    it is enabled again (then POST /v1/subscriptions/{id}/replay sends them).
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    events: list[ActionType] | None = Field(default=None, min_length=1)
    format: Format | None = None
    filters: FiltersIn | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    digest: DigestIn | None = None
    mentions: Mentions | None = None
    enabled: bool | None = None

    _dedupe = field_validator("events")(_unique_values)

    @field_validator("url", "events", "format", "filters", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        """Runs only for fields sent (defaults are not validated): null is refused, leaving out is fine."""
        if value is None:
            raise ValueError("must not be null; leave the field out to keep it")
        return value

    def changes(self) -> dict[str, Any]:
        """Only the fields the request sent."""
        return self.model_dump(include=self.model_fields_set)


class SecretRotationOut(BaseModel):
    previous_secrets: int = Field(description="Rotated-out secrets still signing deliveries (0: none).")
    valid_until: Timestamp | None = Field(description="When the last of them stops signing; null when none is valid.")


class FiltersOut(BaseModel):
    tiers: list[str]
    stages: list[str]
    owner_rep_ids: list[str]
    customer_ids: list[str]


class DigestOut(BaseModel):
    after: int
    window_minutes: int


class EndpointHealthOut(BaseModel):
    """What the notifier has seen of this subscription's endpoint (docs/webhooks.md, endpoint health)."""

    state: Literal["healthy", "failing", "circuit_open", "disabled"] = Field(
        description="healthy: the last attempt succeeded (or none yet); failing: recent attempts failed; "
        "circuit_open: deliveries wait after consecutive failures; disabled: the subscription is disabled."
    )
    consecutive_failures: int
    failing_since: Timestamp | None = Field(description="First failure since the last success.")
    circuit_open_until: Timestamp | None = Field(
        description="Deliveries are held back until then, then one probe goes through (past: probing)."
    )
    last_status: int | None = Field(description="HTTP status of the last failed attempt (null: no response).")
    last_error: str | None
    last_failure_at: Timestamp | None
    last_success_at: Timestamp | None


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    format: str
    filters: FiltersOut
    rate_limit_per_minute: int | None
    digest: DigestOut | None = Field(description="Per-rep storm limit; null: every alert on its own.")
    mentions: dict[str, str] = Field(description="Owner rep id -> chat user id @-mentioned in chat messages.")
    description: str | None
    created_at: Timestamp
    enabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    health: EndpointHealthOut
    secret_rotation: SecretRotationOut


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="Signing secret (whsec_..., or the one given for feishu/dingtalk). Shown only here; store it."
    )


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_s: int = Field(
        default=DEFAULT_OVERLAP_S, ge=0, le=MAX_OVERLAP_S,
        description="How long the old secret keeps signing too (seconds, at most 7 days; 0: stops now).",
    )
    secret: ProviderSecret | None = Field(
        default=None, description="feishu/dingtalk only: the new secret the bot shows (the old one stops at once)."
    )

    _no_whitespace = field_validator("secret")(_no_whitespace)


class SecretRotated(BaseModel):
    id: str
    secret: str = Field(description="The new current secret. Shown only here; store it.")
    overlap_until: Timestamp | None = Field(description="Until when the previous secret signs too; null: not at all.")
    secret_rotation: SecretRotationOut


class TestDeliveryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: TestType = Field(  # type: ignore[valid-type]
        default=ACTION_THROTTLE,
        description="Which kind of sample to send: an action type, or fatigue.digest for a sample per-rep digest.",
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = Field(
        default=None, description="Only deliveries dead-lettered at or after this time (RFC 3339); null: all."
    )


class ReplayAccepted(BaseModel):
    subscription_id: str
    replayed: int = Field(description="Dead-lettered deliveries made pending again (due now, attempts reset).")


class TestDeliveryAccepted(BaseModel):
    action_id: str = Field(description="The sample action's id (also its webhook-id base); it carries `test: true`.")
    subscription_id: str
    type: str


# ---- policy ----


class CustomerErased(BaseModel):
    """What DELETE /v1/customers/{id} erased, and what it cannot erase."""

    customer_id: str
    erased: dict[str, bool] = Field(description="By kind of data (state, snapshot, lists, rejected: the adapters' "
                                    "rejected entries of its addresses or id, identities, profile): whether it existed "
                                    "and was erased now (`profile`: the tombstone written on the profiles topic).")
    remains: list[str] = Field(description="What is not erased here and where it stays until retention or expiry.")


class PolicyOut(BaseModel):
    """The fatigue policy: the one stored through the API, or the packaged default when none is."""

    version: int | None = Field(
        description="Version of the stored policy (use it in If-Match); null when none is stored.", examples=[3]
    )
    source: Literal["api", "default"] = Field(
        description="api: stored through PUT /v1/policy. default: nothing stored, the packaged default is shown "
        "(a scorer started with FATIGUE_POLICY_FILE uses that file instead)."
    )
    updated_at: Timestamp | None = Field(description="When the stored policy was written; null for the default.")
    sha256: str = Field(description="SHA-256 of the YAML text (hex).")
    yaml: str = Field(description="The policy document exactly as stored (comments kept).")
    policy: dict[str, Any] | None = Field(
        description="The effective settings, defaults filled in (see docs/policy.md); null when the stored "
        "document is invalid (see `problem`)."
    )
    problem: str | None = Field(
        default=None,
        description="Why the stored policy is not in force: the document is invalid (written to Redis by hand, "
        "not through the API), or a scorer refused it at run time (the core failed with it on live data). The "
        "scorer keeps its previous policy until a valid one is PUT.",
    )


# ---- webhook deliveries ----

DeliveryStatus = Literal["pending", "delivered", "failed", "digested"]


class DeliveryOut(BaseModel):
    """One action for one subscription. No secrets: the signing secret stays with the subscription."""

    id: str = Field(description="The webhook-id the receiver sees.", examples=["msg_3f2a9c0d4e5b6a7f8091a2b3c4d5e6f7"])
    status: DeliveryStatus
    subscription_id: str
    action_id: str
    action_type: str = Field(examples=[ACTION_THROTTLE])
    customer_id: str | None
    attempts: int = Field(description="HTTP attempts made (reset to 0 by a retry).")
    next_attempt_at: Timestamp | None = Field(description="When a pending delivery is tried next.")
    last_status: int | None = Field(description="HTTP status of the last attempt; null when none came back.")
    last_error: str | None
    digest_id: str | None = Field(
        default=None, description="Status digested: the id of the digest delivery this action was folded into."
    )
    created_at: Timestamp
    updated_at: Timestamp


# ---- intake (issue 12): provider adapters ----


class AdapterItemOut(BaseModel):
    index: int = Field(description="Position of the item in the request (0 for providers that send one per request).")
    outcome: Literal["unmapped", "invalid", "ignored"]
    reason: str = Field(description="Why no event was stored for it.")


class AdapterAccepted(BaseModel):
    """Every item of the request is counted once: accepted + duplicates + unmapped + invalid + ignored = received."""

    received: int = Field(description="Items in the request (records, provider events).")
    accepted: int = Field(description="Events stored (acknowledged by the event log).")
    duplicates: int = Field(description="Events stored before (same provider event id): not stored again.")
    unmapped: int = Field(description="Items whose recipient maps to no customer: kept in the rejected store.")
    invalid: int = Field(description="Items the event contract refuses: kept in the rejected store.")
    ignored: int = Field(description="Items that are no contact (e.g. a deferred email): counted only.")
    rejected: list[AdapterItemOut] = Field(
        description="Every item not stored (unmapped, invalid, ignored) with its index and reason, by index.")


class RejectedOut(BaseModel):
    id: str = Field(description="Entry id (a cursor for `before`).")
    received_at_ms: int
    provider: str | None
    reason: str | None = Field(description="no_customer or invalid.")
    detail: str | None
    recipient: str | None = Field(description="The normalised email or phone that matched no profile.")
    event: Any = Field(description="The contract event the adapter made (without customer_id when none was found).")
    source: Any = Field(description="The provider's item, abridged.")


class RejectedPage(BaseModel):
    items: list[RejectedOut]
    next: str | None = Field(description="Pass as `before` for the next (older) page; null at the end.")
