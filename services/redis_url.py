"""REDIS_URL: one Redis (`redis://`, `rediss://`) or a Redis Cluster (`redis+cluster://`, `rediss+cluster://`).

A Cluster URL names seed nodes, any of which is enough to discover the rest (redis-py's RedisCluster
asks a seed for the slot map):

    redis+cluster://[user:password@]host1:port1[,host2:port2,...][/0][?ssl_ca_certs=/ca.pem&...]

`rediss+cluster://` connects with TLS to every node; TLS options come as query parameters, as redis-py
reads them from a single-node `rediss://` URL (TLS_OPTIONS). A Cluster has only database 0: another
index is a ConfigError. Pure parsing: no Redis import, no I/O. Errors never quote the URL (it may hold
a password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""Cluster URL scheme -> whether it uses TLS."""
DEFAULT_PORT = 6379
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
"""Query parameters a `rediss+cluster://` URL may carry (redis-py's connection keyword arguments)."""
CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True)
class ClusterLocation:
    """A parsed Cluster URL: seed nodes, credentials and TLS options."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str | bool], ...] = ()


def scheme_of(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def is_cluster_url(url: str) -> bool:
    """Whether REDIS_URL names a Redis Cluster (its scheme is `redis+cluster` or `rediss+cluster`)."""
    return scheme_of(url) in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterLocation:
    """The seed nodes, credentials and TLS options of a Cluster URL; ValueError saying what is wrong."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://")
    tls = CLUSTER_SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    _check_database(path)
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    nodes = tuple(_node(part) for part in hosts.split(","))
    return ClusterLocation(nodes, tls, username, password, _tls_options(query, tls))


def _check_database(path: str) -> None:
    database = path.strip("/")
    if database not in ("", "0"):
        shown = database if database.isdigit() else "given"
        raise ValueError(f"REDIS_URL names database {shown}, but a Redis Cluster has only database 0 "
                         "(remove the /N from the URL, or use FATIGUE_REDIS_PREFIX to keep deployments apart)")


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:  # `redis+cluster://secret@host` is a password alone, as redis-py reads `redis://secret@host`
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _node(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError("REDIS_URL lists an empty seed node: write host:port[,host:port…]")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        # the text is not quoted: a URL missing its `@` would put a password here
        raise ValueError(f"REDIS_URL seed node {host} has a port that is not a number from 1 to 65535")
    return host, int(port_text)


def _tls_options(query: str, tls: bool) -> tuple[tuple[str, str | bool], ...]:
    options: list[tuple[str, str | bool]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in TLS_OPTIONS:
            known = ", ".join(TLS_OPTIONS)
            raise ValueError(f"REDIS_URL option {name[:40]!r} is not known for a Cluster; known: {known}")
        if not tls:
            raise ValueError(f"REDIS_URL option {name} needs TLS: use rediss+cluster://")
        options.append((name, _tls_value(name, value)))
    return tuple(options)


def _tls_value(name: str, value: str) -> str | bool:
    if name == "ssl_check_hostname":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"REDIS_URL option ssl_check_hostname is {value[:10]!r}, not true or false")
        return value.lower() in ("true", "1", "yes")
    if name == "ssl_cert_reqs" and value.lower() not in CERT_REQS:
        raise ValueError(f"REDIS_URL option ssl_cert_reqs is {value[:10]!r}, not one of {', '.join(CERT_REQS)}")
    return value.lower() if name == "ssl_cert_reqs" else value
