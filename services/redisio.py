"""Redis plumbing: one way to build a client from settings, for one Redis or a Redis Cluster.

`RedisClient` is what every store takes: redis-py's asyncio `Redis` (REDIS_URL `redis://`,
`rediss://`) or `RedisCluster` (`redis+cluster://`, `rediss+cluster://`; services/redis_url.py).
Both speak the same commands; on a Cluster, the keys of one command, script or MULTI/EXEC must
share a hash slot (services/names.py says which keys share a `{tag}`); work over keys of several
slots goes through the helpers here (`slot_groups`, `eval_each`, `mget_many`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand
from redis.asyncio.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    TryAgainError,
    WatchError,
)

from services.errors import ConfigError
from services.names import RedisKeys
from services.redis_url import is_cluster_url, parse_cluster_url

if TYPE_CHECKING:
    from services.settings import CommonSettings

REDIS_URL_FORMS = ("redis://[user:password@]host[:port][/db], rediss://… (TLS), unix:///path/to/socket, or "
                   "redis+cluster://host:port[,host:port…] (rediss+cluster:// with TLS) for a Redis Cluster")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a REDIS_URL, or None. The message never repeats the URL (it may hold a password).

    The forms are redis-py's (`Redis.from_url`): redis://, rediss:// and unix://, and a Redis Cluster's
    (services/redis_url.py). A URL without a host (`redis://`) is refused rather than read as localhost."""
    if is_cluster_url(url):
        try:
            parse_cluster_url(url)
        except ConfigError as exc:
            return str(exc).removeprefix("REDIS_URL ")
        return None
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


RedisClient: TypeAlias = Redis | RedisCluster
"""A Redis client: one server or a Cluster (see the module docstring)."""
AnyPipeline: TypeAlias = Pipeline | ClusterPipeline

REDIS_ERRORS = (RedisError, RedisClusterException)
"""What a Redis call raises when the store does not answer as it should: redis-py raises
RedisClusterException (not a RedisError) when no seed node answers or no node serves a slot."""

_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 30}


class _Cluster(RedisCluster):
    """redis-py's asyncio RedisCluster, which reads the slot map before the first command of any
    task goes out. redis-py 8.1 routes commands that start before its first `initialize()` finished
    without a slot map; several at once (a burst of requests on a fresh client) then broke its
    connections (AttributeError, not a RedisError). Here they all wait for the one initialization.

    During a failover redis-py's retry of one command closes every connection of the client (`aclose`);
    another task's command that was using one then fails with AttributeError (its writer gone) or
    RuntimeError (uvloop: the transport closed): here that is the connection error it is
    (`closed_under`), so the API answers 503 (or skips de-duplication), never 500."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()  # under redis-py's own lock: one initialization, the others wait
        with closed_under():
            return await super().execute_command(*args, **kwargs)


@contextmanager
def closed_under() -> Iterator[None]:
    """Turn what redis-py 8.1 raises for a connection closed under a command by another task's retry
    during a failover (AttributeError; uvloop's RuntimeError on a closed transport) into the
    ConnectionError it is, an outage like any other. Seen in tests/e2e/test_pipeline_on_redis_cluster.py
    as a 500 of `POST /v1/events`, once after Kafka had the events (confirming their de-duplication)."""
    try:
        yield
    except (AttributeError, RuntimeError) as exc:
        raise ConnectionError(f"a Redis connection was closed while in use ({exc})") from exc


def make_redis(settings: CommonSettings) -> RedisClient:
    """The client REDIS_URL names: a RedisCluster for a cluster URL, else a Redis."""
    return make_redis_for(settings.redis_url)


def make_redis_for(url: str) -> RedisClient:
    """A client for `url`; ConfigError (never the URL itself) when the URL cannot be used."""
    problem = redis_url_problem(url)
    if problem:
        raise ConfigError(f"REDIS_URL {problem}")
    if not is_cluster_url(url):
        return Redis.from_url(url, decode_responses=True, **_TIMEOUTS)
    location = parse_cluster_url(url)
    tls: dict[str, Any] = {"ssl": True, **dict(location.tls_options)} if location.tls else {}
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],
        username=location.username, password=location.password, decode_responses=True, **tls, **_TIMEOUTS,
    )


async def ping(client: RedisClient) -> None:
    """Raise (REDIS_ERRORS) unless the store can serve requests: one Redis answers PING; a Cluster node
    says `cluster_state:ok`, i.e. a primary serves every slot (not so while a failover is under way)."""
    if not isinstance(client, RedisCluster):
        await client.ping()
        return
    state = (await client.cluster_info()).get("cluster_state")
    if state != "ok":
        raise ClusterDownError(f"the Redis Cluster does not serve every slot (cluster_state:{state})")


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def check_layout(client: RedisClient, keys: RedisKeys) -> None:
    """ConfigError when `keys` were built for the other kind of Redis (settings.keys builds the right
    ones): a Cluster client with single-Redis names would fail later with CROSSSLOT."""
    if keys.cluster != is_cluster(client):
        want = "a Redis Cluster" if is_cluster(client) else "one Redis"
        raise ConfigError(f"the Redis key layout does not match the client: the client talks to {want}; "
                          "build the keys with settings.keys (RedisKeys(prefix, cluster=...))")


def slot_groups(client: RedisClient, keys: Sequence[str]) -> list[list[int]]:
    """The indexes of `keys`, grouped by hash slot (one group on one Redis: every key is in one place)."""
    if not isinstance(client, RedisCluster):
        return [list(range(len(keys)))] if keys else []
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(client.keyslot(key), []).append(index)
    return list(groups.values())


class NotReplicated(RedisError):
    """Writes were applied by the primary but not acknowledged by enough replicas in time (WAIT): a
    failover now could lose them. Retriable: a store outage for the caller."""


async def eval_each(client: RedisClient, script: str,
                    calls: Sequence[tuple[Sequence[str], Sequence[str | bytes | int | float]]],
                    *, replicas: int = 0, timeout_ms: int = 2000) -> list[Any]:
    """Run the Lua `script` once per (keys, args) of `calls`, pipelined (on a Cluster: one round trip
    per node), and return each result. The keys of one call must share a slot on a Cluster.

    `replicas` > 0: then also wait until that many replicas of every primary written to acknowledged
    the writes (WAIT on the connection that carried them), else raise NotReplicated.

    EVAL, not EVALSHA: a Cluster pipeline refuses EVALSHA (redis-py), and a replica promoted by a
    failover may not hold a script loaded before. Redis caches the script body either way.
    """
    if not calls:
        return []
    if replicas and isinstance(client, RedisCluster):
        replies = await _eval_and_wait_per_node(client, script, calls, replicas, timeout_ms)
    else:
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.eval(script, len(keys), *keys, *args)
            if replicas:  # one Redis: a pipeline (and redis-py's retry of it) is one connection
                pipe.execute_command("WAIT", replicas, timeout_ms)
            with closed_under():
                replies = list(await pipe.execute())
    acknowledged = [int(n) for n in replies[len(calls):]]
    if any(n < replicas for n in acknowledged):
        raise NotReplicated(f"{min(acknowledged)} of {replicas} Redis replicas acknowledged the writes "
                            f"within {timeout_ms} ms")
    return replies[:len(calls)]


async def _eval_and_wait_per_node(client: RedisCluster, script: str,
                                  calls: Sequence[tuple[Sequence[str], Sequence[str | bytes | int | float]]],
                                  replicas: int, timeout_ms: int) -> list[Any]:
    """The scripts of each primary and a WAIT after them, sent on one connection to that primary (WAIT
    covers the writes of its own connection); the replies of the scripts in order, then one WAIT reply
    per primary.

    Not redis-py's Cluster pipeline: when a connection breaks it sends the pipeline again, and then
    routes the WAIT (which names no key) to whichever node it likes, whose answer says nothing of these
    writes (redis-py 8.1). Here a broken connection, a moved slot or a node that is gone is an error
    for the caller, who knows the outcome is unknown; the slot map is read again for the next call, as
    redis-py does before its own retries."""
    await client.initialize()
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, (keys, _) in enumerate(calls):
        node = client.get_node_from_key(keys[0])
        if node is None:
            raise ClusterDownError(f"no primary serves the slot of {keys[0]}")
        by_node.setdefault(node.name, (node, []))[1].append(index)
    replies: list[Any] = [None] * len(calls)
    waits: list[Any] = []

    async def run(node: ClusterNode, indexes: list[int]) -> None:
        commands = [PipelineCommand(n, "EVAL", script, len(calls[i][0]), *calls[i][0], *calls[i][1])
                    for n, i in enumerate(indexes)]
        commands.append(PipelineCommand(len(indexes), "WAIT", replicas, timeout_ms))
        await node.execute_pipeline(commands)
        for command in commands:
            if isinstance(command.result, Exception):
                raise command.result
        for i, command in zip(indexes, commands[:-1], strict=True):
            replies[i] = command.result
        waits.append(commands[-1].result)

    try:
        with closed_under():
            await asyncio.gather(*(run(node, indexes) for node, indexes in by_node.values()))
    except (*RedisCluster.ERRORS_ALLOW_RETRY, AskError, TryAgainError):
        await client.aclose()  # the slot map is read again before the next command
        raise
    return [*replies, *waits]


async def mget_many(client: RedisClient, keys: Sequence[str]) -> list[Any]:
    """MGET over keys of any slots, in order: one MGET on one Redis; on a Cluster one per node
    (redis-py's `mget_nonatomic`). Not atomic across keys on a Cluster."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


async def watched(client: RedisClient, keys: Sequence[str], update: Callable[[AnyPipeline], Awaitable[None]]) -> None:
    """An optimistic transaction: WATCH `keys`, let `update` read them and queue its writes after
    `pipe.multi()`, EXEC; all again when a watched key changed meanwhile. On a Cluster every key
    read and written must share a slot (redis-py raises CrossSlotTransactionError otherwise)."""
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(*keys)
                await update(pipe)
                await pipe.execute()
                return
            except WatchError:
                continue


async def read_watched(pipe: AnyPipeline, keys: Sequence[str]) -> list[Any]:
    """The values of `keys` read inside `watched` (before `multi()`): one MGET on one Redis, one GET
    each on a Cluster (redis-py's Cluster pipeline refuses MGET)."""
    if isinstance(pipe, ClusterPipeline):
        return [await pipe.get(key) for key in keys]
    return list(await pipe.mget(list(keys)))
