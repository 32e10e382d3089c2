"""The scorer's commits on a real Redis Cluster whose replica does not acknowledge (Redis WAIT).

A commit the primary applied but no replica acknowledged within FATIGUE_REDIS_WAIT_TIMEOUT_MS is an
outage of unknown outcome (scorer/partition_store.py): applied on the primary, lost if the primary dies
before its replica has it. The worker must not go on from it — neither by retrying the batch (the
offsets it reads again would say "done") nor by a new owner's claim — until a replica holds it. The
replica is stopped (SIGSTOP) for well under the node timeout, so the Cluster does not fail it over;
WAIT on the primary then returns 0 after its timeout (measured: the timeout, never earlier).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from scorer.clock import ManualClock
from scorer.decoding import Record
from scorer.partition_store import PartitionChanges, RedisPartitionStore
from scorer.processor import Processor
from scorer.publisher import MemoryActionPublisher
from services.contract import EventEnvelope, EventIn, encode
from services.deadletter import MemoryDeadLetterSink
from services.errors import StoreUnavailable
from services.metrics import ScorerMetrics
from services.names import RedisKeys
from services.policy.model import default_policy
from services.redisio import RedisClient
from tests.redis_cluster import ClusterNode, RedisClusterProcesses
from tests.scorer.stored import snapshot_of

pytestmark = pytest.mark.integration

EVENTS, PROFILES = "ev", "pr"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
WAIT_TIMEOUT_MS = 150
"""Short, so that two timed-out commits fit well inside the Cluster's 2000 ms node timeout."""


def event_record(offset: int, customer: str = "c1") -> Record:
    body = EventIn.model_validate({"event_id": f"e{offset}", "type": "touch", "customer_id": customer,
                                   "channel": "email", "occurred_at": (NOW - timedelta(days=1)).isoformat()})
    return Record(EVENTS, 0, offset, encode(EventEnvelope(producer="p", received_at=NOW, event=body)))


def worker(client: RedisClient, keys: RedisKeys) -> tuple[Processor, ScorerMetrics]:
    store = RedisPartitionStore(client, keys, wait_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS)
    metrics = ScorerMetrics(CollectorRegistry())
    processor = Processor(store, MemoryActionPublisher(), default_policy, ManualClock(int(NOW.timestamp() * 1000)),
                          metrics, events_topic=EVENTS, profiles_topic=PROFILES, dead_letters=MemoryDeadLetterSink())
    return processor, metrics


def replica_of_partition(cluster: RedisClusterProcesses, keys: RedisKeys, partition: int) -> ClusterNode:
    """The replica of the primary serving the partition, once it has all that primary wrote so far."""
    primary = cluster.primary_of(keys.partition(partition).epoch())
    cluster.wait_replicated(primary)
    (replica,) = cluster.replicas_of(primary)
    return replica


async def test_a_retry_does_not_go_on_from_a_commit_no_replica_acknowledged(
        redis_cluster: RedisClusterProcesses, cluster_client: RedisClient, unique: str) -> None:
    keys = RedisKeys(f"t{unique}:", cluster=True)
    processor, metrics = worker(cluster_client, keys)
    await processor.assign([0])
    await processor.process(0, [event_record(0)])
    replica = replica_of_partition(redis_cluster, keys, 0)
    batch = [event_record(1), event_record(2)]
    with redis_cluster.paused(replica):
        with pytest.raises(StoreUnavailable):
            await processor.process(0, batch)  # applied on the primary only: WAIT says 0 replicas
        with pytest.raises(StoreUnavailable):
            await processor.process(0, batch)  # the retry: still only on the primary, so not done
        assert processor.position(0, EVENTS) == 1  # what Kafka's committed offset would follow
    await processor.process(0, batch)  # the replica has it now: the retry finds it done, once
    assert processor.position(0, EVENTS) == 3
    assert (await snapshot_of(cluster_client, f"t{unique}:", 0, "c1", NOW))["events_counted"] == 3
    assert metrics.events.labels("replayed")._value.get() == 2


async def test_a_new_owner_does_not_start_from_a_commit_no_replica_acknowledged(
        redis_cluster: RedisClusterProcesses, cluster_client: RedisClient, unique: str) -> None:
    keys = RedisKeys(f"t{unique}:", cluster=True)
    before, _ = worker(cluster_client, keys)
    await before.assign([0])
    await before.process(0, [event_record(0)])
    replica = replica_of_partition(redis_cluster, keys, 0)
    after, _ = worker(cluster_client, keys)
    with redis_cluster.paused(replica):
        with pytest.raises(StoreUnavailable):
            await before.process(0, [event_record(1)])
        with pytest.raises(StoreUnavailable):
            await after.assign([0])  # its claim would seek past offset 1, which only the primary holds
        assert after.owned() == []
    owned = await after.assign([0])
    assert owned[0].offsets == {EVENTS: 1}


async def test_a_commit_whose_connection_broke_is_not_taken_as_replicated(
        redis_cluster: RedisClusterProcesses, cluster_client: RedisClient, unique: str) -> None:
    """A commit sent on a connection the primary had closed (a network cut, a restart): redis-py sends
    it again, and its WAIT must go with it to that primary, on the same connection — not to another
    node, whose own replicas would answer for a write they never saw."""
    keys = RedisKeys(f"t{unique}:", cluster=True)
    await cluster_client.initialize()
    default = cluster_client.get_default_node()
    partition = next(p for p in range(16) if cluster_client.get_node_from_key(keys.partition(p).epoch()) != default)
    store = RedisPartitionStore(cluster_client, keys, wait_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS)
    claim = await store.claim(partition)
    await store.commit(partition, claim.epoch, PartitionChanges(offsets={EVENTS: 0}))
    primary = redis_cluster.primary_of(keys.partition(partition).epoch())
    replica = replica_of_partition(redis_cluster, keys, partition)
    with redis_cluster.paused(replica):
        primary.client().client_kill_filter(_type="normal", skipme=True)  # the store's connections closed
        with pytest.raises(StoreUnavailable):
            await store.commit(partition, claim.epoch, PartitionChanges(offsets={EVENTS: 1}))
    # unknown outcome (sent or not before the connection failed): read again, as a replica holds it
    assert await store.offsets(partition, claim.epoch) in ({EVENTS: 0}, {EVENTS: 1})
