"""REDIS_URL and KAFKA_BOOTSTRAP_SERVERS are checked when settings are built: a form the clients
cannot use is a ValueError naming what is expected, never repeating the value (it may hold a password)."""

from __future__ import annotations

import pytest

from services.errors import ConfigError
from services.redisio import redis_url_problem
from services.settings import CommonSettings, bootstrap_servers_problem


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://127.0.0.1:6379/0", None),
    ("rediss://user:pw@redis.example.com:6380/2", None),
    ("unix:///run/redis/redis.sock", None),
    ("localhost:6379", "must be redis://"),
    ("http://h/0", "must be redis://"),
    ("redis://", "names no host"),
    ("redis://h:port/0", "the port is not a number"),
    ("unix://", "needs the socket's path"),
])
def test_redis_url_forms(url: str, problem: str | None) -> None:
    found = redis_url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(("servers", "ok"), [
    ("127.0.0.1:9092", True), ("kafka-1:9092,kafka-2:9092", True), ("kafka", True), ("[::1]:9092", True),
    ("PLAINTEXT://kafka:9092", False), ("kafka:port", False), ("kafka:0", False), ("", False), ("a:1,", False),
    ("kafka 1:9092", False),
])
def test_bootstrap_server_forms(servers: str, ok: bool) -> None:
    assert (bootstrap_servers_problem(servers) is None) == ok


def test_settings_name_the_variable_in_one_line_without_the_value() -> None:
    env = {"REDIS_URL": "http://u:hunter2-secret@h/0", "FATIGUE_PARTITIONS": "0", "KAFKA_BOOTSTRAP_SERVERS": "k:1"}
    with pytest.raises(ConfigError) as raised:
        CommonSettings.load("topics", env=env)
    message = str(raised.value)
    assert message.startswith("invalid topics settings: REDIS_URL: must be redis://")
    assert "FATIGUE_PARTITIONS: Input should be greater than or equal to 1" in message
    assert "\n" not in message and "hunter2" not in message
