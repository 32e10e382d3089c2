"""End to end on Apache Kafka: `fatigue up` (API, scorer, notifier) on the three-node cluster.

1. The pipeline: HTTP -> events topic -> scorer -> Redis and actions topic -> notifier -> a signed
   webhook, as in tests/e2e, with the idempotent producer on and replication factor 3.
2. A broker killed with SIGKILL while events flow (replication factor 3, min.insync.replicas 2): the
   API answers 202, or 503 with Retry-After only while the leadership of the dead broker's partitions
   moves; once it moved, 202 again with the broker still down. Every acknowledged event is counted
   once; events of batches acknowledged at the first attempt are on the log once (the idempotent
   producer's retries are not duplicates); every action is delivered at least once, under one
   webhook-id per action and subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from fatigue.embedded import EmbeddedStack, free_port
from fatigue.kafka_cluster import KafkaCluster
from services.names import ACTION_THROTTLE
from services.settings import CommonSettings
from tests.helpers import over_contacted, stop_process, wait_until
from tests.kafka.conftest import KAFKA_GROUP_ENV, wait_in_sync
from tests.kafka.helpers import read_topic, stored_snapshots
from tests.notifier.receivers import Receiver, always, receiving

pytestmark = pytest.mark.apache_kafka

API_KEY = "kafka-e2e-key-0123456789"
REQUEST_TIMEOUT_S = 4.0
"""FATIGUE_KAFKA_REQUEST_TIMEOUT_S here: a write the brokers cannot take is a 503 after 4 s."""


@dataclass
class Up:
    api: httpx.AsyncClient
    settings: CommonSettings
    env: dict[str, str]


@pytest.fixture(scope="module")
def up_env(kafka_cluster: KafkaCluster, stack: EmbeddedStack) -> dict[str, str]:
    unique = f"{os.getpid()}x{time.monotonic_ns() % 10**8}"
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_cluster.bootstrap_servers,
        "REDIS_URL": stack.redis_url,
        "FATIGUE_TOPIC_PREFIX": f"e{unique}.",
        "FATIGUE_REDIS_PREFIX": f"e{unique}:",
        "FATIGUE_PARTITIONS": "6",
        "FATIGUE_REPLICATION_FACTOR": str(kafka_cluster.replication_factor),
        "FATIGUE_KAFKA_IDEMPOTENCE": "true",
        "FATIGUE_KAFKA_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "FATIGUE_API_KEYS": f"e2e:{API_KEY}:all",
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
        **KAFKA_GROUP_ENV,
    }


@pytest.fixture(scope="module")
def up_on_kafka(up_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fatigue up` against the Apache Kafka cluster; yields the API's base URL."""
    port = free_port()
    workdir = Path(tmp_path_factory.mktemp("up-on-kafka"))
    log = (workdir / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fatigue.cli", "up", "--port", str(port), "--workdir", str(workdir / "up")],
        env={**os.environ, **up_env}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, signal.SIGINT, timeout_s=40)
        log.close()


@pytest.fixture
async def up(up_on_kafka: str, up_env: dict[str, str]) -> AsyncIterator[Up]:
    async with httpx.AsyncClient(base_url=up_on_kafka, headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=30) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, 90, "the API on Apache Kafka to be ready")
        yield Up(client, CommonSettings.from_env(up_env), up_env)


@contextlib.asynccontextmanager
async def subscribed(api: httpx.AsyncClient) -> AsyncIterator[Receiver]:
    """A receiver subscribed to throttles for the duration (the subscription is deleted after it)."""
    async with receiving(always(204)) as receiver:
        created = await api.post("/v1/subscriptions", json={"url": receiver.url, "events": [ACTION_THROTTLE]})
        assert created.status_code == 201, created.text
        receiver.secret = created.json()["secret"]
        try:
            yield receiver
        finally:
            await api.delete(f"/v1/subscriptions/{created.json()['id']}")


async def test_thirteen_touches_reach_the_webhook_signed_with_reasons(up: Up) -> None:
    async with subscribed(up.api) as receiver:
        posted = await up.api.post("/v1/events", json=over_contacted("kafka-e2e"))
        assert posted.status_code == 202, posted.text
        assert posted.json() == {"accepted": 16, "duplicates": 0, "rejected": []}
        await wait_until(lambda: _async(receiver.successes()), 90, "a delivered fatigue.throttle")
        customer = (await up.api.get("/v1/customers/kafka-e2e")).json()
    [hit] = receiver.hits
    assert hit.verified and hit.action_id
    assert customer["status"] == "throttled"
    assert customer["windows"]["30d"]["touches"]["total"] == 13
    assert customer["last_action"]["type"] == ACTION_THROTTLE


async def _async(value: object) -> object:
    await asyncio.sleep(0)
    return value


# ---------------------------------------------------------------- a broker killed under load


@dataclass
class Answer:
    batch: int
    started: float
    status: int
    retry_after: str | None


class Loader:
    """Posts batches of events one after another, `pace_s` apart; keeps every answer. A batch answered
    503 is kept for a retry after the failure, as a client honouring Retry-After would send it."""

    def __init__(self, api: httpx.AsyncClient, batches: list[list[dict]], pace_s: float) -> None:
        self.api = api
        self.batches = batches
        self.pace_s = pace_s
        self.answers: list[Answer] = []

    async def run(self) -> None:
        for index, batch in enumerate(self.batches):
            await self.post(index, batch)
            await asyncio.sleep(self.pace_s)

    async def post(self, index: int, batch: list[dict]) -> Answer:
        started = time.monotonic()
        response = await self.api.post("/v1/events", json=batch)
        answer = Answer(index, started, response.status_code, response.headers.get("retry-after"))
        if response.status_code == 202:
            assert response.json()["rejected"] == [], response.text
        self.answers.append(answer)
        return answer

    def refused(self) -> list[int]:
        ok = {a.batch for a in self.answers if a.status == 202}
        return sorted({a.batch for a in self.answers if a.status != 202} - ok)


async def _leadership_moved(cluster: KafkaCluster, topic: str, dead: int) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers, request_timeout_ms=3000)
    try:
        await admin.start()
        [described] = await admin.describe_topics([topic])
        leaders = [p["leader"] for p in described["partitions"]]
        return all(leader not in (dead, -1) for leader in leaders)
    except Exception:  # the dead broker may be the one asked first: ask again
        return False
    finally:
        await admin.close()


async def _leader_of_partition_0(cluster: KafkaCluster, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()


@pytest.mark.timeout(300)
async def test_a_broker_killed_under_load_loses_nothing_acknowledged_and_counts_nothing_twice(
    up: Up, kafka_cluster: KafkaCluster, redis_client: Redis
) -> None:
    customers = [f"bk{n}" for n in range(80)]
    per_customer = {c: over_contacted(c) for c in customers}  # 13 touches + 3 opens: one throttle each
    stream = [per_customer[c][i] for i in range(16) for c in customers]
    batches = [stream[i:i + 20] for i in range(0, len(stream), 20)]
    settings = up.settings
    async with subscribed(up.api) as receiver:
        loader = Loader(up.api, batches, pace_s=0.25)
        loading = asyncio.create_task(loader.run())
        await wait_until(lambda: _async(len(loader.answers) >= 8), 60, "the first batches accepted")

        dead = await _leader_of_partition_0(kafka_cluster, settings.events_topic)
        killed_at = time.monotonic()
        kafka_cluster.kill(dead)
        await wait_until(lambda: _leadership_moved(kafka_cluster, settings.events_topic, dead), 60,
                         f"the partitions of broker {dead} led elsewhere")
        moved_at = time.monotonic()
        await wait_until(lambda: _async(sum(a.started > moved_at for a in loader.answers) >= 5), 60,
                         "five batches posted after the move, the broker still down")
        accepted_while_down = [a for a in loader.answers if a.started > moved_at + 1.0]
        await asyncio.to_thread(kafka_cluster.restart, dead)
        await loading
        for index in loader.refused():  # the client's retries, after the failure
            assert (await loader.post(index, batches[index])).status == 202
        await wait_in_sync(kafka_cluster, [settings.events_topic, settings.actions_topic])

        snapshots = await _wait_all_counted(redis_client, settings, customers)
        actions = await _throttle_actions(settings, customers)
        await wait_until(lambda: _async(all(receiver_has(receiver, a) for a in actions)), 90,
                         f"every one of {len(actions)} throttle actions delivered")

    # The API: 202, or 503 + Retry-After only while the leadership moved.
    assert {a.status for a in loader.answers} <= {202, 503}, [a.status for a in loader.answers]
    refused = [a for a in loader.answers if a.status == 503]
    assert all(a.retry_after for a in refused)
    assert all(killed_at - 1 <= a.started <= moved_at + 1.0 for a in refused), (killed_at, moved_at, refused)
    assert accepted_while_down and all(a.status == 202 for a in accepted_while_down)

    # Nothing acknowledged lost, nothing counted twice.
    for customer, snap in snapshots.items():
        assert snap["events_counted"] == 16, customer
        assert snap["windows"]["30d"]["touches"]["total"] == 13, customer
        assert snap["status"] == "throttled", customer
    # On the log: the batches acknowledged at their first attempt are there exactly once.
    first_try = {a.batch for a in loader.answers if a.status == 202} - {a.batch for a in refused}
    on_log = defaultdict(int)
    for record in await read_topic(settings.kafka_bootstrap_servers, settings.events_topic):
        on_log[json.loads(record.value)["event"]["event_id"]] += 1
    assert {e["event_id"]: on_log[e["event_id"]] for i in first_try for e in batches[i]
            if on_log[e["event_id"]] != 1} == {}

    # Deliveries: at least once, one webhook-id per action (one subscription).
    assert set(actions.values()) == set(customers)
    for action_id in actions:
        hits = [h for h in receiver.hits if h.action_id == action_id]
        assert any(h.succeeded and h.verified for h in hits), action_id
        assert len({h.webhook_id for h in hits}) == 1, (action_id, hits)


def receiver_has(receiver: Receiver, action_id: str) -> bool:
    return any(h.action_id == action_id and h.succeeded for h in receiver.hits)


async def _wait_all_counted(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict]:
    async def counted() -> dict[str, dict] | None:
        snaps = await stored_snapshots(redis, settings, customers)
        done = len(snaps) == len(customers) and all(s["events_counted"] >= 16 for s in snaps.values())
        return snaps if done else None

    return await wait_until(counted, 120, "every customer's 16 events counted")


async def _throttle_actions(settings: CommonSettings, customers: list[str]) -> dict[str, str]:
    """action_id -> customer of every throttle of `customers` on the actions topic (repeats of one
    action_id are one), once every customer has one."""

    async def every_customer() -> dict[str, str] | None:
        found = {}
        for record in await read_topic(settings.kafka_bootstrap_servers, settings.actions_topic):
            action = json.loads(record.value)
            if action["type"] == ACTION_THROTTLE and action["customer_id"] in customers:
                found[action["action_id"]] = action["customer_id"]
        return found if set(found.values()) == set(customers) else None

    return await wait_until(every_customer, 60, "a throttle action for every customer on the actions topic")
