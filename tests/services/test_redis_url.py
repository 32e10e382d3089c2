"""REDIS_URL for a Redis Cluster: seed nodes, credentials, TLS options, and clear refusals that never
quote the URL (it may hold a password)."""

from __future__ import annotations

import pytest

from services.errors import ConfigError
from services.redis_url import ClusterLocation, is_cluster_url, parse_cluster_url
from services.settings import CommonSettings

PASSWORD = "s3cret-Pa55word"


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
         ClusterLocation(nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001)))),
        ("redis+cluster://r1", ClusterLocation(nodes=(("r1", 6379),))),
        (f"redis+cluster://app:{PASSWORD}@r1:7000,r2:7000/0",
         ClusterLocation(nodes=(("r1", 7000), ("r2", 7000)), username="app", password=PASSWORD)),
        (f"redis+cluster://:{PASSWORD}@r1:7000/", ClusterLocation(nodes=(("r1", 7000),), password=PASSWORD)),
        ("redis+cluster://u:p%40ss%3Aw@[::1]:7000", ClusterLocation(nodes=(("::1", 7000),), username="u",
                                                                    password="p@ss:w")),
        ("rediss+cluster://r1:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=Required&ssl_check_hostname=false",
         ClusterLocation(nodes=(("r1", 7000),), tls=True, tls_options=(
             ("ssl_ca_certs", "/ca.pem"), ("ssl_cert_reqs", "required"), ("ssl_check_hostname", False)))),
    ],
)
def test_cluster_urls_name_seeds_credentials_and_tls(url: str, location: ClusterLocation) -> None:
    assert is_cluster_url(url)
    assert parse_cluster_url(url) == location


@pytest.mark.parametrize("url", ["redis://r1:6379/0", "rediss://r1:6379/2", "unix:///tmp/r.sock"])
def test_single_node_urls_are_not_cluster_urls(url: str) -> None:
    assert not is_cluster_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"redis+cluster://:{PASSWORD}@r1:7000/3", "names database 3, but a Redis Cluster has only database 0"),
        (f"redis+cluster://:{PASSWORD}@r1:7000/x", "names database given, but a Redis Cluster has only database 0"),
        (f"redis+cluster://app:{PASSWORD},r2:7000", "has a port that is not a number"),  # the @ forgotten
        ("redis+cluster://r1:7000,,r2:7000", "empty seed node"),
        ("redis+cluster://r1:70000", "has a port that is not a number"),
        ("redis+cluster://r1:7000?ssl_ca_certs=/ca.pem", "needs TLS: use rediss+cluster://"),
        (f"rediss+cluster://r1:7000?password={PASSWORD}", "option 'password' is not known"),
        ("rediss+cluster://r1:7000?ssl_cert_reqs=maybe", "ssl_cert_reqs is 'maybe', not one of"),
    ],
)
def test_a_bad_cluster_url_is_a_config_error_naming_the_problem_not_the_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as refused:
        _load(url)
    assert reason in str(refused.value)
    assert PASSWORD not in str(refused.value)


def _load(url: str) -> CommonSettings:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_URL", url)
        return CommonSettings.load("api")


@pytest.mark.parametrize(("url", "cluster"), [("redis://r1:6379/0", False), ("redis+cluster://r1:7000", True)])
def test_the_key_layout_follows_the_url(url: str, cluster: bool) -> None:
    keys = CommonSettings(redis_url=url, redis_prefix="fx:").keys
    assert keys.cluster is cluster
    assert keys.policy_version() == ("{fx:policy}:version" if cluster else "fx:policy:version")


@pytest.mark.parametrize(("url", "given", "waits"), [
    ("redis://r1:6379/0", None, 0), ("redis+cluster://r1:7000", None, 1), ("redis+cluster://r1:7000", 0, 0),
    ("redis://r1:6379/0", 1, 1),
])
def test_writes_wait_for_a_replica_by_default_on_a_cluster(url: str, given: int | None, waits: int) -> None:
    assert CommonSettings(redis_url=url, redis_wait_replicas=given).wait_replicas == waits
