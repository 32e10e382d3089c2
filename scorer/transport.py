"""Faust's aiokafka transport with a configurable consumer fetch wait, and Faust's Kafka credentials.

Faust hard-codes `fetch_max_wait_ms=1500` for its worker consumer. On Apache Kafka a fetch
returns as soon as data arrives, so the value only bounds idle polling; on a broker that holds
fetches for the full wait (the embedded Tansu does) it adds up to 1.5 s to every event's
latency. `FATIGUE_FETCH_MAX_WAIT_MS` sets it for both the scorer and the notifier.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TransportT
from faust.types.auth import CredentialsT


def faust_credentials(security: dict[str, Any]) -> CredentialsT | None:
    """`broker_credentials` for the Faust app from `services.kafka.kafka_security_kwargs`.

    Faust turns them back into the same aiokafka arguments for its consumer, producer and topic
    admin (`credentials_to_aiokafka_auth`): SSLCredentials gives SSL; SASLCredentials gives
    SASL_PLAINTEXT, or SASL_SSL when it carries an ssl_context.
    """
    protocol = security["security_protocol"]
    if protocol == "SSL":
        return faust.SSLCredentials(security["ssl_context"])
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=security["sasl_plain_username"],
            password=security["sasl_plain_password"],
            mechanism=security["sasl_mechanism"],
            ssl_context=security.get("ssl_context"),
        )
    return None


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[Transport]:
    class ConsumerThread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher (aiokafka 0.14).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class TunedConsumer(Consumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class TunedTransport(Transport):
        Consumer = TunedConsumer

    return TunedTransport


class TunedApp(faust.App):
    """A Faust app whose consumer uses `transport_with_fetch_wait`."""

    fetch_max_wait_ms = 500

    def _new_transport(self) -> TransportT:
        transport_class = transport_with_fetch_wait(self.fetch_max_wait_ms)
        return transport_class(self.conf.broker_consumer, self)
