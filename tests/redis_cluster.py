"""The loopback Redis Cluster of the tests: it lives in fatigue/redis_cluster.py (the benchmark suite starts
one too); the tests import it from here as before."""

from fatigue.redis_cluster import ClusterNode, RedisClusterProcesses, start_cluster, unsupported

__all__ = ["ClusterNode", "RedisClusterProcesses", "start_cluster", "unsupported"]
