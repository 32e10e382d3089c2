"""Publishes actions to the actions topic (acks=all), keyed by customer id."""

from __future__ import annotations

from typing import Protocol

from services.actions import Action, encode_action
from services.kafka import AckedProducer
from services.settings import CommonSettings


class ActionPublisher(Protocol):
    async def publish(self, actions: list[Action]) -> None:
        """Return once every action is acknowledged by the broker; raise BrokerUnavailable otherwise."""
        ...


class KafkaActionPublisher:
    def __init__(self, settings: CommonSettings) -> None:
        self._topic = settings.actions_topic
        self._producer = AckedProducer(settings, "fatigue-scorer-actions", "actions")

    async def publish(self, actions: list[Action]) -> None:
        await self._producer.send_all(self._topic, [(a["customer_id"].encode(), encode_action(a)) for a in actions])

    async def close(self) -> None:
        await self._producer.close()


class MemoryActionPublisher:
    """Keeps published actions in a list: for the backtest and for tests of the processor."""

    def __init__(self) -> None:
        self.published: list[Action] = []

    async def publish(self, actions: list[Action]) -> None:
        self.published.extend(actions)
