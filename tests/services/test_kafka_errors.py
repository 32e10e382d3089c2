"""Kafka client errors are classified once: an outage (retried in place), a property of the record
(never retried) or a configuration error (neither: the process stops with the operator action)."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka

from services.errors import BrokerMisconfigured, BrokerUnavailable, RecordRefused
from services.kafka_errors import Fault, as_fatigue_error, classify, record_reason


@pytest.mark.parametrize(("error", "fault", "reason"), [
    # the record itself: sending it again cannot succeed
    (kafka.MessageSizeTooLargeError("The message is 1200000 bytes when serialized"), Fault.RECORD, "too_large"),
    (kafka.RecordListTooLargeError(), Fault.RECORD, "too_large"),
    (kafka.RecordTooLargeError("larger than the fetch size"), Fault.RECORD, "too_large"),
    (kafka.CorruptRecordException(), Fault.RECORD, "invalid"),
    (kafka.InvalidTimestampError(), Fault.RECORD, "invalid"),
    # outages, whatever aiokafka's `retriable` says (KafkaTimeoutError and BrokerNotAvailable say False)
    (kafka.KafkaTimeoutError(), Fault.OUTAGE, None),
    (kafka.RequestTimedOutError(), Fault.OUTAGE, None),
    (kafka.KafkaConnectionError("Connection refused"), Fault.OUTAGE, None),
    (kafka.NodeNotReadyError(), Fault.OUTAGE, None),
    (kafka.NotLeaderForPartitionError(), Fault.OUTAGE, None),
    (kafka.LeaderNotAvailableError(), Fault.OUTAGE, None),
    (kafka.NotEnoughReplicasError(), Fault.OUTAGE, None),
    (kafka.NotEnoughReplicasAfterAppendError(), Fault.OUTAGE, None),
    (kafka.BrokerNotAvailableError(), Fault.OUTAGE, None),
    (kafka.NoBrokersAvailable(), Fault.OUTAGE, None),
    (kafka.KafkaStorageError(), Fault.OUTAGE, None),
    (kafka.UnknownError(), Fault.OUTAGE, None),  # not understood: never blamed on the record
    (TimeoutError(), Fault.OUTAGE, None),
    (ConnectionResetError(), Fault.OUTAGE, None),
    # the brokers refuse this client or topic: neither an outage nor the record's fault
    (kafka.TopicAuthorizationFailedError("fatigue.events.v1"), Fault.CONFIG, None),
    (kafka.ClusterAuthorizationFailedError(), Fault.CONFIG, None),
    (kafka.GroupAuthorizationFailedError(), Fault.CONFIG, None),
    (kafka.SaslAuthenticationFailed(), Fault.CONFIG, None),
    (kafka.InvalidTopicError(), Fault.CONFIG, None),
    (kafka.UnknownTopicOrPartitionError(), Fault.CONFIG, None),  # raised after the metadata wait
    (kafka.UnsupportedVersionError(), Fault.CONFIG, None),
])
def test_each_error_has_one_kind(error: BaseException, fault: Fault, reason: str | None) -> None:
    assert classify(error) is fault
    typed = as_fatigue_error(error, "sending to t")
    expected = {Fault.RECORD: RecordRefused, Fault.OUTAGE: BrokerUnavailable, Fault.CONFIG: BrokerMisconfigured}
    assert type(typed) is expected[fault]
    assert typed.retriable is (fault is Fault.OUTAGE)
    assert str(typed).startswith("sending to t: ")
    if reason is not None:
        assert record_reason(error) == reason
        assert isinstance(typed, RecordRefused) and typed.reason == reason


def test_a_configuration_error_says_what_the_operator_does() -> None:
    typed = as_fatigue_error(kafka.TopicAuthorizationFailedError("fatigue.events.v1"), "sending to fatigue.events.v1")
    assert isinstance(typed, BrokerMisconfigured)
    assert "Write on the topic" in typed.operator_action
    assert "fatigue.events.v1" in str(typed)


def test_an_error_already_typed_is_kept() -> None:
    refused = RecordRefused("too large", reason="too_large")
    assert as_fatigue_error(refused, "x") is refused
    assert classify(refused) is Fault.RECORD
