"""Redis plumbing: one way to build a client from settings, and the check of a REDIS_URL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url

from services.errors import ConfigError

if TYPE_CHECKING:
    from services.settings import CommonSettings

REDIS_URL_FORMS = "redis://[user:password@]host[:port][/db], rediss://… (TLS) or unix:///path/to/socket"


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a REDIS_URL, or None. The message never repeats the URL (it may hold a password).

    The forms are redis-py's (`Redis.from_url`): redis://, rediss:// and unix://. A URL without a
    host (`redis://`) is refused rather than read as localhost."""
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
        options = parse_url(url.strip())
    except ValueError as exc:
        if "scheme" in str(exc):
            return f"must be {REDIS_URL_FORMS}"
        reason = "the port is not a number" if "Port" in str(exc) else "it cannot be parsed"
        return f"is not a valid Redis URL ({reason}); expected {REDIS_URL_FORMS}"
    if scheme == "unix" and not options.get("path"):
        return "unix:// needs the socket's path, e.g. unix:///run/redis/redis.sock"
    if scheme != "unix" and not options.get("host"):
        return f"names no host; expected {REDIS_URL_FORMS}"
    return None

RedisClient = Redis
"""The client every service holds (a single Redis; services/redisio.py makes it)."""


def make_redis(settings: CommonSettings) -> Redis:
    """A client for REDIS_URL; ConfigError (never the URL itself) when the URL cannot be used."""
    problem = redis_url_problem(settings.redis_url)
    if problem:
        raise ConfigError(f"REDIS_URL {problem}")
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
    )
