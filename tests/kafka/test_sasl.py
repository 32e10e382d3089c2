"""SASL against Apache Kafka: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for real.

The embedded Tansu could not be used for this (it offers SCRAM only, and its users can only be made
over an authenticated connection its memory storage cannot bootstrap: docs/configuration.md). Here a
one-node Apache Kafka gets a SASL_PLAINTEXT listener with the three mechanisms (PLAIN users in the
listener's JAAS settings, SCRAM users written at format time with `--add-scram`), and each client
the services build from FATIGUE_KAFKA_* (services.kafka.kafka_security_kwargs) goes through it:
the topics admin, the acked producer (idempotent), a consumer, and the scorer's Faust worker.
A wrong password is refused, and the error does not show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from fatigue.embedded import EmbeddedStack, free_port
from fatigue.kafka_cluster import KafkaCluster, node_addresses, start_cluster, unavailable_reason
from services.errors import FatigueError
from services.kafka import AckedProducer, ensure_topics, kafka_security_kwargs
from services.logs import CHATTY_LOGGERS, quiet_chatty_loggers, setup_logging
from services.settings import CommonSettings
from tests.helpers import over_contacted, produce_events, service_process, wait_until
from tests.kafka.conftest import KAFKA_GROUP_ENV
from tests.kafka.helpers import stored_snapshots

pytestmark = pytest.mark.apache_kafka

USER = "fatigue"
PASSWORD = "sasl-Pa55word-never-shown"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Apache Kafka with a SASL_PLAINTEXT listener; yields that listener's address."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"Apache Kafka tier skipped: {reason}")
    [node] = node_addresses(1)
    sasl = f"127.0.0.1:{free_port()}"
    listener = "listener.name.sasl_plaintext"
    extra = {
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},SASL_PLAINTEXT://{sasl},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},SASL_PLAINTEXT://{sasl}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        f"{listener}.plain.sasl.jaas.config":
            f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}="{PASSWORD}";',
        **{f"{listener}.{m.lower()}.sasl.jaas.config": SCRAM_LOGIN for m in MECHANISMS[1:]},
    }
    scram = [arg for m in MECHANISMS[1:] for arg in ("--add-scram", f"{m}=[name={USER},password={PASSWORD}]")]
    cluster: KafkaCluster = start_cluster(Path(tmp_path_factory.mktemp("kafka-sasl")), 1, extra=extra,
                                          addresses=[node], format_args=scram)
    try:
        yield sasl
    finally:
        cluster.kill_all()


def _env(sasl: str, mechanism: str, unique: str, password: str = PASSWORD) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": sasl, "FATIGUE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "FATIGUE_KAFKA_SASL_MECHANISM": mechanism, "FATIGUE_KAFKA_SASL_USERNAME": USER,
            "FATIGUE_KAFKA_SASL_PASSWORD": password, "FATIGUE_KAFKA_IDEMPOTENCE": "true",
            "FATIGUE_TOPIC_PREFIX": f"s{unique}.", "FATIGUE_REDIS_PREFIX": f"s{unique}:", "FATIGUE_PARTITIONS": "2"}


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_topics_producer_and_consumer_authenticate(sasl_kafka: str, mechanism: str, unique: str) -> None:
    settings = CommonSettings.from_env(_env(sasl_kafka, mechanism, unique))
    assert await ensure_topics(settings)
    producer = AckedProducer(settings, "test-sasl", "test")
    try:
        await producer.send_all(settings.actions_topic, [(b"k", f"{mechanism}-{n}".encode()) for n in range(5)])
    finally:
        await producer.close()
    consumer = AIOKafkaConsumer(settings.actions_topic, bootstrap_servers=sasl_kafka, auto_offset_reset="earliest",
                                group_id=f"g{unique}", **kafka_security_kwargs(settings))
    await consumer.start()
    got: list[bytes] = []
    try:
        async def five() -> bool:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                got.extend(r.value for r in records)
            return len(got) >= 5

        await wait_until(five, 30, "the five records read back over SASL")
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(f"{mechanism}-{n}".encode() for n in range(5))


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_a_wrong_password_is_refused_without_showing_it(
    sasl_kafka: str, mechanism: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-Pa55word-never-shown"
    settings = CommonSettings.from_env({**_env(sasl_kafka, mechanism, unique, password=wrong),
                                        "FATIGUE_KAFKA_REQUEST_TIMEOUT_S": "5"})
    with pytest.raises(FatigueError) as refused:
        await asyncio.wait_for(ensure_topics(settings), 30)
    assert wrong not in str(refused.value) and PASSWORD not in str(refused.value)
    assert wrong not in caplog.text and PASSWORD not in caplog.text


async def test_the_scorer_scores_over_scram(
    sasl_kafka: str, stack: EmbeddedStack, redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    env = {**_env(sasl_kafka, "SCRAM-SHA-512", unique), **KAFKA_GROUP_ENV, "REDIS_URL": stack.redis_url,
           "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}
    settings = CommonSettings.from_env(env)
    await ensure_topics(settings)
    await produce_events(settings, over_contacted("sasl-cust"))

    async def throttled() -> dict | None:
        snap = (await stored_snapshots(redis_client, settings, ["sasl-cust"])).get("sasl-cust")
        return snap if snap and snap["status"] == "throttled" else None

    with service_process("scorer", env, tmp_path) as proc:
        snap = await wait_until(throttled, 60, "the customer scored by a scorer over SCRAM-SHA-512")
        assert proc.poll() is None
    assert snap["events_counted"] == 16
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("scorer-*.log"))
    assert PASSWORD not in log


async def test_debug_logs_of_a_plain_exchange_do_not_show_the_password(sasl_kafka: str, unique: str) -> None:
    """aiokafka logs each request at DEBUG, the SASL PLAIN one with the password in its bytes
    (`user\\x00user\\x00password`); FATIGUE_LOG_LEVEL=DEBUG must not put it in the log."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), list(root.filters), root.level)
    try:
        setup_logging("DEBUG", service="test", stream=stream)
        for password in (PASSWORD, "wrong-Pa55word-never-shown"):
            settings = CommonSettings.from_env({**_env(sasl_kafka, "PLAIN", unique, password=password),
                                                "FATIGUE_KAFKA_REQUEST_TIMEOUT_S": "5"})
            with contextlib.suppress(FatigueError):
                await asyncio.wait_for(ensure_topics(settings), 30)
    finally:
        root.handlers[:], root.filters[:] = saved[0], saved[1]
        root.setLevel(saved[2])
        quiet_chatty_loggers("WARNING", CHATTY_LOGGERS)
    text = stream.getvalue()
    assert "SaslAuthenticateRequest" in text, "no DEBUG record of the SASL exchange: the check cannot fail"
    assert PASSWORD not in text and "wrong-Pa55word-never-shown" not in text
