"""A real Redis Cluster on loopback: 3 primaries and 3 replicas, and its failover.

Used by the tests (tests/conftest.py: the `redis_cluster` fixtures) and by the benchmark suite (section 1:
the scorer on a Cluster beside a single Redis), so it lives in the command package beside the embedded
broker and Redis (fatigue/embedded.py), which neither the services nor their packages import.

Six `redis-server --cluster-enabled yes` processes on free loopback ports (each its own process
group, data directory and cluster bus port), joined by `redis-cli --cluster create ... --cluster-replicas 1`.
`start_cluster` returns once `cluster_state:ok` holds on every node and every replica's link to its
primary is up (a primary killed before its replica synced is never failed over; ../shared/TESTING.md).

`kill_primary_of(key)` kills -9 the primary that serves a key; `wait_failed_over(key)` waits until a
replica took its slots over and the cluster is whole again (node timeout 2000 ms: about 10 s here);
`revive(node)` starts the killed node again, as a replica, so the next failover test has one;
`paused(node)` stops a node for a moment (SIGSTOP), e.g. a replica, so that WAIT cannot be satisfied.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from fatigue.embedded import LOOPBACK, free_port, wait_for_port

NODES = 6
NODE_TIMEOUT_MS = 2000
START_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 60.0


def unsupported() -> str | None:
    """Why a Cluster cannot be started here (one line), or None."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        return "redis-server / redis-cli not installed (apt-get install -y redis-server)"
    version = subprocess.run([server, "--version"],  # noqa: S603 - the binary found on PATH, fixed arguments
                             capture_output=True, text=True, check=False).stdout
    major = version.partition(" v=")[2].split(".")[0]
    if not major.isdigit() or int(major) < 7:
        return f"redis-server 7 or later needed for a loopback Cluster (cluster-port), found: {version.strip()}"
    helped = subprocess.run([cli, "--cluster", "help"],  # noqa: S603 - the binary found on PATH, fixed arguments
                            capture_output=True, text=True, check=False)
    if "create" not in helped.stdout + helped.stderr:
        return "redis-cli has no --cluster support"
    return None


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, decode_responses=True, socket_timeout=5,
                           socket_connect_timeout=2)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class RedisClusterProcesses:
    """A running Cluster; `stop()` ends every node it started."""

    workdir: Path
    nodes: list[ClusterNode] = field(default_factory=list)
    started_in_s: float = 0.0

    @property
    def url(self) -> str:
        """The seed URL the services take as REDIS_URL (two seeds: either may be the one killed)."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:2])

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def living(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive()]

    def primary_of_slot(self, slot: int) -> ClusterNode:
        """The node that serves `slot` now, as a living node sees it."""
        for entry in self.living()[0].client().cluster("slots"):
            start, end, primary = entry[0], entry[1], entry[2]
            if start <= slot <= end:
                return self.node(int(primary[1]))
        raise AssertionError(f"slot {slot} is not served by any node")

    def primary_of(self, key: str) -> ClusterNode:
        return self.primary_of_slot(key_slot(key.encode()))

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        return [n for n in self.living()
                if n is not primary and int(n.client().info("replication").get("master_port") or 0) == primary.port]

    def wait_replicated(self, primary: ClusterNode, timeout_s: float = 30.0) -> None:
        """Wait until every replica of `primary` has all it wrote so far (replication offsets equal)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = primary.client().info("replication")
            offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if offsets and min(offsets) >= int(info["master_repl_offset"]):
                return
            time.sleep(0.05)
        raise AssertionError(f"the replicas of {primary.port} did not catch up within {timeout_s}s")

    @contextmanager
    def paused(self, node: ClusterNode) -> Iterator[None]:
        """SIGSTOP the node for the block (it neither answers nor replicates), SIGCONT after. Keep the
        block shorter than the node timeout, or the Cluster marks it failed."""
        os.killpg(node.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(node.proc.pid, signal.SIGCONT)

    def kill_primary_of(self, key: str) -> ClusterNode:
        """kill -9 the primary serving `key` (its whole process group); the node killed (for `revive`)."""
        victim = self.primary_of_slot(key_slot(key.encode()))
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        return victim

    def wait_failed_over(self, key: str, timeout_s: float = FAILOVER_TIMEOUT_S) -> ClusterNode:
        """Wait until a living node serves `key`'s slot and every living node says cluster_state:ok;
        that node (the promoted replica)."""
        slot = key_slot(key.encode())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                primary = self.primary_of_slot(slot)
                if primary.alive() and all(_cluster_ok(n) for n in self.living()):
                    return primary
            except (redis.RedisError, AssertionError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"no replica took slot {slot} over within {timeout_s}s")

    def revive(self, node: ClusterNode) -> None:
        """Start a killed node again (its ports, its directory and nodes.conf): it rejoins as a replica
        of the node that took its slots over. Returns once the Cluster is whole again."""
        index = self.nodes.index(node)
        self.nodes[index] = _start_node(node.directory, node.port, node.bus_port)
        _wait_whole(self, START_TIMEOUT_S)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                os.killpg(node.proc.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(timeout=10)


def start_cluster(workdir: Path) -> RedisClusterProcesses:
    """Start 6 nodes, create the Cluster (3 primaries, 1 replica each), wait until it is whole."""
    started = time.monotonic()
    cluster = RedisClusterProcesses(workdir)
    try:
        for index in range(NODES):
            cluster.nodes.append(_start_node(workdir / f"node{index}"))
        _create(cluster)
        _wait_whole(cluster, START_TIMEOUT_S)
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in_s = time.monotonic() - started
    return cluster


def _start_node(directory: Path, port: int | None = None, bus_port: int | None = None) -> ClusterNode:
    directory.mkdir(parents=True, exist_ok=True)
    port, bus_port = port or free_port(), bus_port or free_port()
    # --cluster-config-file is relative to --dir (a path with a folder in it fails at start).
    args = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", LOOPBACK,
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus_port), "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(directory), "--save", "",
            "--appendonly", "no", "--logfile", "redis.log"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,  # noqa: S603 - fixed binary, arguments built here
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory, start_new_session=True)
    try:
        wait_for_port(port, 20, proc)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return ClusterNode(port, bus_port, directory, proc)


def _create(cluster: RedisClusterProcesses) -> None:
    addresses = [f"{LOOPBACK}:{n.port}" for n in cluster.nodes]
    cli = shutil.which("redis-cli") or "redis-cli"
    done = subprocess.run([cli, "--cluster", "create", *addresses,  # noqa: S603 - fixed binary, loopback addresses
                           "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")


def _cluster_ok(node: ClusterNode) -> bool:
    return "cluster_state:ok" in str(node.client().execute_command("CLUSTER", "INFO"))


def _replica_synced(node: ClusterNode) -> bool:
    info = node.client().info("replication")
    return info.get("role") != "slave" or info.get("master_link_status") == "up"


def _wait_whole(cluster: RedisClusterProcesses, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            replicas = [n for n in cluster.nodes if n.client().info("replication").get("role") == "slave"]
            if (len(replicas) == NODES // 2 and all(_cluster_ok(n) for n in cluster.nodes)
                    and all(_replica_synced(n) for n in replicas)):
                return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the Redis Cluster in {cluster.workdir} was not whole within {timeout_s}s")
