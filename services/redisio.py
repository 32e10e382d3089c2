"""Redis plumbing: one way to build a client from settings."""

from __future__ import annotations

from redis.asyncio import Redis

from services.settings import CommonSettings


def make_redis(settings: CommonSettings) -> Redis:
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
    )
