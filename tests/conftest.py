"""Session fixtures: a real Tansu broker and a real redis-server on free loopback ports.

Integration tests ask for `stack` (or `redis_client`, `common_settings`); unit tests ask for
nothing and need no infrastructure. Each test gets its own topic prefix / Redis prefix / group ids
so tests never see each other's data on the shared session broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fatigue.embedded import EmbeddedStack, start_stack
from services.kafka import ensure_topics
from services.settings import CommonSettings


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
