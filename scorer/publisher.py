"""Publishes actions to the actions topic (acks=all), keyed by customer id."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.actions import Action, encode_action
from services.errors import BrokerUnavailable
from services.kafka import make_producer
from services.settings import CommonSettings


class ActionPublisher(Protocol):
    async def publish(self, actions: list[Action]) -> None:
        """Return once every action is acknowledged by the broker; raise BrokerUnavailable otherwise."""
        ...


class KafkaActionPublisher:
    def __init__(self, settings: CommonSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(self._settings, client_id="fatigue-scorer-actions")
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise BrokerUnavailable(f"cannot start the actions producer: {exc}") from exc
            self._producer = producer
        return self._producer

    async def publish(self, actions: list[Action]) -> None:
        if not actions:
            return
        producer = await self._started()
        topic = self._settings.actions_topic
        try:
            futures = [
                await producer.send(topic, key=a["customer_id"].encode(), value=encode_action(a)) for a in actions
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.kafka_request_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"actions were not acknowledged by the broker: {exc!r}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class MemoryActionPublisher:
    """Keeps published actions in a list: for the backtest and for tests of the processor."""

    def __init__(self) -> None:
        self.published: list[Action] = []

    async def publish(self, actions: list[Action]) -> None:
        self.published.extend(actions)
