"""What a Kafka client error means, decided once for every producer and consumer of the project.

Three kinds, and what each caller does with them:

- OUTAGE — the brokers did not answer or cannot take writes right now (connection lost, no leader,
  not enough in-sync replicas, a request or delivery timed out). Retried in place; nothing is skipped.
  Becomes `BrokerUnavailable`.
- RECORD — the record itself is refused: larger than the producer's `max_request_size`
  (FATIGUE_KAFKA_MAX_REQUEST_BYTES, checked by aiokafka before sending) or the topic's
  `max.message.bytes` (MessageSizeTooLargeError, errno 10), a record batch too large (errno 18), a
  corrupt or invalid record (errno 2), a timestamp out of the topic's range (errno 32). Sending it
  again cannot succeed: never retried, the record is dead-lettered (or answered 4xx) and the stream
  goes on. Becomes `RecordRefused`, with a bounded `reason` (RECORD_REASONS).
- CONFIG — the brokers refuse this client or topic, whatever the record: authorization and
  authentication (ACLs, SASL), an unknown or invalid topic, an unsupported version or setting. Not
  retried silently and never blamed on a record: `BrokerMisconfigured` (a ConfigError) stops a worker
  with the operator action (its supervisor restarts it; health shows it), and the API answers 503.

Which error is which follows the Kafka protocol's error codes (the `errors` table of
kafka.apache.org/protocol) and aiokafka's classes. aiokafka's own `retriable` flag is not enough on its
own: it calls KafkaTimeoutError and BrokerNotAvailableError not retriable (they are outages here) and
UnknownTopicOrPartitionError retriable (aiokafka's producer raises it only after waiting
`request_timeout_ms` for the topic's metadata: a missing topic, a configuration error). A KafkaError
not named here counts as an outage: a record is never dropped or dead-lettered on an error this module
does not understand.
"""

from __future__ import annotations

import enum

from aiokafka import errors as kafka

from services.errors import BrokerMisconfigured, BrokerUnavailable, FatigueError, RecordRefused


class Fault(enum.Enum):
    OUTAGE = "outage"
    RECORD = "record"
    CONFIG = "config"


TOO_LARGE = "too_large"
INVALID = "invalid"
RECORD_REASONS = (TOO_LARGE, INVALID)
"""The `reason` label of refused records (bounded)."""

_RECORD_ERRORS: dict[type[BaseException], str] = {
    kafka.MessageSizeTooLargeError: TOO_LARGE,  # errno 10, and aiokafka's check of max_request_size
    kafka.RecordListTooLargeError: TOO_LARGE,  # errno 18
    kafka.RecordTooLargeError: TOO_LARGE,  # a consumer: a record larger than the fetch size
    kafka.CorruptRecordException: INVALID,  # errno 2
    kafka.InvalidMessageError: INVALID,  # errno 2 (aiokafka's older name)
    kafka.InvalidTimestampError: INVALID,  # errno 32: outside the topic's message.timestamp.*.max.ms
}

_CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.SaslAuthenticationFailed,
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.UnsupportedSaslMechanismError,
    kafka.IllegalSaslStateError,
    kafka.InvalidTopicError,
    kafka.UnknownTopicOrPartitionError,
    kafka.InvalidRequiredAcksError,
    kafka.UnsupportedVersionError,
    kafka.UnsupportedForMessageFormatError,
    kafka.IncompatibleBrokerVersion,
    kafka.UnrecognizedBrokerVersion,
    kafka.KafkaConfigurationError,
    kafka.InvalidConfigurationError,
    kafka.UnsupportedCodecError,
    kafka.SecurityDisabled,
    kafka.PolicyViolationError,
)


def classify(exc: BaseException) -> Fault:
    """The kind of a Kafka client error (or a timeout / OS error around one). See the module docstring."""
    if isinstance(exc, RecordRefused):
        return Fault.RECORD
    if isinstance(exc, BrokerMisconfigured):
        return Fault.CONFIG
    if type(exc) in _RECORD_ERRORS:
        return Fault.RECORD
    if isinstance(exc, _CONFIG_ERRORS):
        return Fault.CONFIG
    return Fault.OUTAGE


def record_reason(exc: BaseException) -> str:
    """The bounded reason label of a RECORD error (`too_large` or `invalid`)."""
    if isinstance(exc, RecordRefused):
        return exc.reason
    return _RECORD_ERRORS.get(type(exc), INVALID)


def as_fatigue_error(exc: BaseException, what: str) -> FatigueError:
    """The typed error for `exc`, its message saying what was being done (`what`), e.g. "sending a
    dead letter to fatigue.deadletter.v1". Never includes a password: aiokafka's messages do not hold
    the SASL or TLS secrets, and no setting is added here."""
    if isinstance(exc, FatigueError):
        return exc
    detail = f"{what}: {type(exc).__name__}: {_message(exc)}"
    kind = classify(exc)
    if kind is Fault.RECORD:
        return RecordRefused(detail, reason=record_reason(exc))
    if kind is Fault.CONFIG:
        return BrokerMisconfigured(detail)
    return BrokerUnavailable(detail)


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, kafka.BrokerResponseError):
        text = f"{exc.message}: {exc.description}"
    return text[:500] or "no detail"
