"""Publishes actions to the actions topic (acks=all), keyed by customer id.

An action the brokers refuse for its own properties (too large for the actions topic: see
services/kafka_errors.py) cannot be published by retrying, so it never blocks its partition: it goes
to the dead-letter topic (stage `scorer.publish`, source partition and offset -1) with the reason, and
the batch commits. After an outage, a retry of the batch does not publish again the actions the
brokers already acknowledged (by `action_id`, see services.kafka.AckedProducer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.actions import Action, encode_action
from services.deadletter import DeadLetter, DeadLetterSink
from services.errors import RecordRefused
from services.kafka import AckedProducer
from services.settings import CommonSettings

log = logging.getLogger(__name__)

PUBLISH_STAGE = "scorer.publish"


class ActionPublisher(Protocol):
    async def publish(self, actions: list[Action]) -> None:
        """Return once every action is acknowledged by the broker (or, refused for its own properties,
        dead-lettered); raise BrokerUnavailable (retry) or BrokerMisconfigured otherwise."""
        ...


def _ignore(_: RecordRefused) -> None:
    return None


class KafkaActionPublisher:
    def __init__(self, settings: CommonSettings, dead_letters: DeadLetterSink,
                 on_refused: Callable[[RecordRefused], None] = _ignore) -> None:
        self._topic = settings.actions_topic
        self._producer = AckedProducer(settings, "fatigue-scorer-actions", "actions")
        self._dead_letters = dead_letters
        self._on_refused = on_refused

    async def publish(self, actions: list[Action]) -> None:
        records = [(a["customer_id"].encode(), encode_action(a)) for a in actions]
        refused = await self._producer.send_all(self._topic, records, [a["action_id"] for a in actions])
        if not refused:
            return
        now_ms = int(time.time() * 1000)
        letters = [DeadLetter.of(PUBLISH_STAGE, topic=self._topic, partition=-1, offset=-1, key=records[i][0],
                                 value=records[i][1], error=error, failed_at_ms=now_ms)
                   for i, error in sorted(refused.items())]
        await self._dead_letters.publish(letters)
        for i, error in sorted(refused.items()):
            self._on_refused(error)
            log.warning("action %s for %s refused by the broker, dead-lettered: %s", actions[i]["action_id"],
                        actions[i]["customer_id"], error)

    async def close(self) -> None:
        await self._producer.close()


class MemoryActionPublisher:
    """Keeps published actions in a list: for the backtest and for tests of the processor."""

    def __init__(self) -> None:
        self.published: list[Action] = []

    async def publish(self, actions: list[Action]) -> None:
        self.published.extend(actions)
