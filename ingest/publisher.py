"""EventPublisher: the API's only way to write to Kafka, with an acknowledgement or an error per record.

The producer is started lazily and started again after a failed start, so the API comes up (and
answers 503 for writes) while the brokers are down, and recovers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.errors import BrokerMisconfigured, BrokerUnavailable
from services.kafka import Sent, kafka_security_kwargs, make_producer, send_each
from services.kafka_errors import Fault, as_fatigue_error, classify
from services.settings import CommonSettings

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]
"""(key, value) of one Kafka record; a None value is a tombstone (on a compacted topic: delete the key)."""


class EventPublisher:
    def __init__(self, settings: CommonSettings, client_id: str = "fatigue-ingest") -> None:
        kafka_security_kwargs(settings)  # unloadable TLS files stop the API at start-up (ConfigError), not at a write
        self._settings = settings
        self._client_id = client_id
        self._timeout_s = settings.kafka_request_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish_each(self, topic: str, records: Sequence[Record]) -> Sent:
        """Send all records and find out what became of each one (acks=all): acknowledged, refused for its
        own properties (too large: never send it again), or not sent because of `failure` (an outage or a
        configuration error). Blocks at most `kafka_request_timeout_s` in total, start-up included. Kafka
        errors are never raised here: they are in the result (services.kafka.send_each)."""
        if not records:
            return Sent()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                producer = await self._started()
        except TimeoutError:
            return Sent(failure=BrokerUnavailable(f"no connection to Kafka within {self._timeout_s:g}s"))
        except (BrokerUnavailable, BrokerMisconfigured) as exc:
            return Sent(failure=exc)
        return await send_each(producer, topic, records, timeout_s=max(0.0, deadline - loop.time()),
                               limit_bytes=self._settings.kafka_max_request_bytes)

    async def publish_many(self, topic: str, records: Sequence[Record]) -> None:
        """Send all records, then wait until the brokers acknowledged every one (acks=all).

        Blocks at most `kafka_request_timeout_s` in total. Raises BrokerUnavailable on an outage or
        timeout (some records may then still have been stored: callers retry, consumers de-duplicate by
        event id), BrokerMisconfigured when the brokers refuse this client or topic, and RecordRefused
        (the first) when a record is refused for its own properties; success only when all were stored.
        """
        sent = await self.publish_each(topic, records)
        if sent.failure is not None:
            raise sent.failure
        if sent.refused:
            raise sent.refused[min(sent.refused)]

    async def ping(self, timeout_s: float) -> None:
        """Fetch cluster metadata; BrokerUnavailable if the brokers do not answer within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                producer = await self._started()
                await producer.client.fetch_all_metadata()
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no metadata from Kafka within {timeout_s:g}s") from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka metadata request failed: {exc!r}") from exc

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                self._producer = await self._start()
            return self._producer

    async def _start(self) -> AIOKafkaProducer:
        producer = make_producer(self._settings, self._client_id)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await _stop_quietly(producer)
            where = f"Kafka at {self._settings.kafka_bootstrap_servers}"
            if classify(exc) is Fault.CONFIG:
                raise as_fatigue_error(exc, f"{where} refused this client") from exc
            raise BrokerUnavailable(f"cannot reach {where}: {exc}") from exc
        except BaseException:  # cancelled by the caller's timeout: do not leak the half-started client
            await asyncio.shield(_stop_quietly(producer))
            raise
        log.info("Kafka producer started (%s)", self._settings.kafka_bootstrap_servers)
        return producer


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await producer.stop()
