"""Typed errors under one root.

Each error says whether retrying the same operation can succeed (`retriable`) and what an
operator should do about it (`operator_action`).
"""

from __future__ import annotations


class FatigueError(Exception):
    """Root of every error this project raises on purpose."""

    retriable: bool = False
    operator_action: str = ""


class ConfigError(FatigueError):
    """A setting or a policy file is invalid. Operator action: fix the value named in the message."""

    operator_action = "Fix the setting or file named in the message and restart (or re-upload)."


class PortInUse(ConfigError):
    """A port the command should listen on is taken; the message says which and how to pick another."""

    operator_action = ""


class PolicyError(ConfigError):
    """A fatigue policy document is invalid; the message names the line and the reason."""


class BrokerUnavailable(FatigueError):
    """The Kafka brokers did not acknowledge in time. Operator action: check the brokers."""

    retriable = True
    operator_action = "Check that the Kafka brokers in KAFKA_BOOTSTRAP_SERVERS are up and reachable."


class BrokerMisconfigured(ConfigError):
    """The brokers refused this client or its topic, not one record: not authorized (ACLs, SASL), the
    topic unknown or invalid, a protocol version or setting the brokers do not support. Not an outage
    (waiting does not fix it) and not the record's fault (it is never dead-lettered for it)."""

    operator_action = (
        "Fix the Kafka side named in the message: grant this client's principal Describe and Write on the "
        "topic (and Read on its consumer group), create the topic (`fatigue topics` / ensure_topics), or fix "
        "FATIGUE_KAFKA_* settings; then restart the process."
    )


class RecordRefused(FatigueError):
    """The brokers (or the producer's own size check) refused one record for its own properties: too
    large for FATIGUE_KAFKA_MAX_REQUEST_BYTES or the topic's `max.message.bytes`, or invalid. Sending it
    again cannot succeed, so it is never retried: the record is dead-lettered (consumers) or answered
    4xx (the API). `reason` is a bounded metric label (services/kafka_errors.RECORD_REASONS)."""

    operator_action = (
        "None for the stream. If such records are legitimate, raise the topic's max.message.bytes and "
        "FATIGUE_KAFKA_MAX_REQUEST_BYTES together."
    )

    def __init__(self, message: str, *, reason: str, record_bytes: int | None = None,
                 limit_bytes: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.record_bytes = record_bytes
        self.limit_bytes = limit_bytes


class StoreUnavailable(FatigueError):
    """Redis did not answer. Operator action: check REDIS_URL and the Redis server."""

    retriable = True
    operator_action = "Check that the Redis server in REDIS_URL is up and reachable."


class DestinationRefused(FatigueError):
    """A webhook URL points somewhere the configuration does not allow (private/loopback)."""

    operator_action = (
        "Use a public URL, or allow private/loopback destinations "
        "(FATIGUE_ALLOW_PRIVATE_DESTINATIONS / FATIGUE_ALLOW_LOOPBACK_DESTINATIONS)."
    )


class DestinationUnresolved(FatigueError):
    """A webhook host could not be resolved just now (temporary DNS failure); try again later."""

    retriable = True
    operator_action = "Check DNS resolution from the notifier's network."


class DeliveryFailed(FatigueError):
    """A webhook delivery attempt failed; `retriable` tells whether another attempt may succeed."""

    def __init__(self, message: str, *, retriable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.retry_after_s = retry_after_s


class BadRecord(FatigueError):
    """A record on a topic could not be decoded. It is counted and skipped, never retried."""
