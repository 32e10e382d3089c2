"""Session fixtures: a real Tansu broker and a real redis-server on free loopback ports, and a real
Redis Cluster (3 primaries, 3 replicas; tests/redis_cluster.py) for the tests that ask for it.

Integration tests ask for `stack` (or `redis_client`, `common_settings`); unit tests ask for
nothing and need no infrastructure. Each test gets its own topic prefix / Redis prefix / group ids
so tests never see each other's data on the shared session broker. A store test that must hold on
one Redis and on a Cluster asks for `redis_target` (parametrized: `single`, `cluster`).

The suite runs on several pytest-xdist workers (pyproject's addopts: `-n 4`; most of its time is
spent waiting on brokers, children and timers, not on the two cores): each worker has its own session
fixtures, a test file runs whole on one worker, and the Apache Kafka tier (tests/kafka/) is one unit,
so one worker starts its three brokers (`pytest_xdist_make_scheduler` below). `-n 0` runs everything
in this process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from fatigue.embedded import EmbeddedStack, start_stack
from services.kafka import ensure_topics
from services.names import RedisKeys
from services.redisio import RedisClient, make_redis_for
from services.settings import CommonSettings
from tests.redis_cluster import RedisClusterProcesses, start_cluster, unsupported

APACHE_KAFKA_TIER = "tests/kafka/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Each test file whole on one worker (its module fixtures start once), the Apache Kafka tier one
    unit (its package-scoped three-broker cluster starts once, on one worker). A scheduler of our own:
    `--dist loadgroup` marks groups by editing test ids, which pytest 9.2 no longer reads."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return APACHE_KAFKA_TIER if path.startswith(APACHE_KAFKA_TIER) else path

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    started = start_stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def unique() -> str:
    """A short id that makes topic names, key prefixes and group ids private to one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def infra_env(stack: EmbeddedStack, unique: str) -> dict[str, str]:
    """Environment for settings classes and child processes pointing at the session stack."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "REDIS_URL": stack.redis_url,
        "FATIGUE_TOPIC_PREFIX": f"t{unique}.",
        "FATIGUE_REDIS_PREFIX": f"t{unique}:",
        "FATIGUE_PARTITIONS": "3",
    }


@pytest.fixture
async def common_settings(infra_env: dict[str, str]) -> CommonSettings:
    settings = CommonSettings(**{k: v for k, v in infra_env.items() if not k.startswith("FATIGUE_")},
                              topic_prefix=infra_env["FATIGUE_TOPIC_PREFIX"],
                              redis_prefix=infra_env["FATIGUE_REDIS_PREFIX"],
                              partitions=3)
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def redis_client(stack: EmbeddedStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A real Redis Cluster, one per session (it takes ~9 s to start here; failover tests revive what they kill)."""
    why = unsupported()
    if why:
        pytest.skip(f"no Redis Cluster on this machine: {why}")
    started = time.monotonic()
    cluster = start_cluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    print(f"Redis Cluster up in {time.monotonic() - started:.1f}s at {cluster.url}")  # noqa: T201 - with -s
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterProcesses) -> AsyncIterator[RedisClient]:
    """The client the services build for the session's Redis Cluster."""
    client = make_redis_for(redis_cluster.url)
    try:
        yield client
    finally:
        await client.aclose()


@dataclass(frozen=True)
class RedisTarget:
    """One Redis or a Redis Cluster, as a store test sees it: the client the services would build for
    `url` and the key layout settings would choose (services/names.py)."""

    kind: str  # "single" | "cluster"
    url: str
    client: RedisClient
    keys: RedisKeys


@pytest.fixture(params=["single", "cluster"])
async def redis_target(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[RedisTarget]:
    if request.param == "single":
        url = request.getfixturevalue("stack").redis_url
    else:
        url = request.getfixturevalue("redis_cluster").url
    client = make_redis_for(url)
    try:
        yield RedisTarget(request.param, url, client, RedisKeys(f"t{unique}:", cluster=request.param == "cluster"))
    finally:
        await client.aclose()
