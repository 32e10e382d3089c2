"""Apache Kafka itself on loopback: a KRaft cluster of 1 or 3 combined broker+controller nodes.

For the Apache Kafka test tier (tests/kafka/) and the benchmark; `fatigue up` stays on the embedded
Tansu broker. The broker's jars come from Maven Central through `deploy/fetch-kafka.sh` (the version
pinned in deploy/kafka/pom.xml, every jar checked against deploy/kafka/artifacts.sha256) into a
cache folder; `kafka_libs()` finds them and `unavailable_reason()` says why a cluster cannot start
(no Java 17, jars not fetched).

`start_cluster` formats each node's storage (`kafka.tools.StorageTool format` with one cluster id),
starts every node (`kafka.Kafka server.properties`) as its own process group on free loopback ports,
and returns once every broker is registered. `kill(node_id)` is a SIGKILL of the node's process
group; `restart(node_id)` starts it again on its data; `stop()` ends them all.

`cluster_settings()` are the broker settings docker-compose.yml must carry too (a test compares
them); `TEST_TUNING` is what only the tests and the benchmark change (thread counts, the group join
delay, the cleaner's back-off) to stay lean on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fatigue.embedded import LOOPBACK, free_port, wait_for_port
from services.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"
DEFAULT_HEAP = "384m"
LEAN_JVM_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", "-Djava.awt.headless=true")
"""For the tests: one GC thread, the quick JIT only (less CPU at start), small stacks: three nodes
share two cores with the tests."""
SCRIPT_JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                   "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true")
"""What Apache Kafka's own start script gives the broker (bin/kafka-run-class.sh,
KAFKA_JVM_PERFORMANCE_OPTS; with -Xmx1G from kafka-server-start.sh): for the benchmark."""

TEST_TUNING: dict[str, str] = {
    "group.initial.rebalance.delay.ms": "0",  # default 3000: every group's first join waits that long
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.replica.fetchers": "1",
    "log.cleaner.threads": "1",
    "log.cleaner.backoff.ms": "1000",  # default 15000: how often the cleaner looks for work
    "offsets.topic.num.partitions": "6",  # default 50, each replicated: slow first join on 2 cores
    "transaction.state.log.num.partitions": "6",
}
"""Test-only settings (not in docker-compose.yml): speed, not behaviour."""

LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.common.config
        level: WARN
"""


def kafka_version() -> str:
    """The pinned Apache Kafka version (deploy/kafka/pom.xml)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not found:
        raise ConfigError(f"no <kafka.version> in {POM}")
    return found.group(1).strip()


def kafka_libs() -> Path:
    """Where deploy/fetch-kafka.sh puts the jars (the same rule as the script's --print-dir)."""
    cache = os.environ.get("FATIGUE_KAFKA_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "contact-fatigue" / "kafka"
    )
    return Path(cache) / kafka_version() / "libs"


def java_major() -> int | None:
    """The major version of `java` on PATH; None without one."""
    java = shutil.which("java")
    if java is None:
        return None
    done = subprocess.run([java, "-XshowSettings:properties", "-version"], capture_output=True, text=True,  # noqa: S603
                          timeout=60, check=False)
    found = re.search(r"java\.specification\.version = (\d+)", done.stderr)
    return int(found.group(1)) if found else None


def unavailable_reason(libs: Path | None = None) -> str | None:
    """Why no Apache Kafka node can start here (one line), or None when one can."""
    libs = libs or kafka_libs()
    major = java_major()
    if major is None:
        return "no java on PATH (Apache Kafka needs Java 17+: bash deploy/bootstrap.sh --dev installs it)"
    if major < 17:
        return f"java {major} on PATH; Apache Kafka {kafka_version()} needs Java 17 or later"
    if not (libs / ".complete").exists():
        return f"Apache Kafka {kafka_version()} jars not fetched into {libs} (run: bash deploy/fetch-kafka.sh)"
    return None


@dataclass(frozen=True)
class NodeAddress:
    node_id: int
    port: int
    controller_port: int


def cluster_settings(node: NodeAddress, voters: list[NodeAddress], data_dir: str) -> dict[str, str]:
    """The broker settings of one node of the tested cluster (what docker-compose.yml must carry too).

    Combined broker+controller nodes on a static KRaft quorum (`controller.quorum.voters`), PLAINTEXT
    for clients and between brokers, a CONTROLLER listener for the quorum. With three nodes every
    topic, the offsets and the transaction log are replicated three times and need two in-sync
    replicas to accept a write with acks=all; with one node, one of each.
    """
    replicas = min(3, len(voters))
    min_isr = "2" if replicas >= 3 else "1"
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "controller.quorum.voters": ",".join(f"{v.node_id}@{LOOPBACK}:{v.controller_port}" for v in voters),
        "log.dirs": data_dir,
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        "unclean.leader.election.enable": "false",
    }


@dataclass
class KafkaNode:
    address: NodeAddress
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def node_id(self) -> int:
        return self.address.node_id

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """`sig` to the node's process group (the JVM and anything it started)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9 of the node; returns once it is gone."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@dataclass
class KafkaCluster:
    """1 or 3 Apache Kafka nodes on loopback; `stop()` ends them all."""

    workdir: Path
    libs: Path
    heap: str
    jvm_opts: tuple[str, ...] = LEAN_JVM_OPTS
    nodes: list[KafkaNode] = field(default_factory=list)
    cluster_id: str = ""
    started_s: float = 0.0
    """Seconds from the first format to every broker registered."""

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{LOOPBACK}:{n.address.port}" for n in self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, len(self.nodes))

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def pids(self) -> dict[int, int]:
        return {n.node_id: n.proc.pid for n in self.nodes if n.proc is not None and n.alive()}

    def kill(self, node_id: int) -> None:
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Start a stopped or killed node again on its own data; returns once it listens and is registered."""
        node = self.node(node_id)
        if node.alive():
            return
        self._spawn(node)
        wait_for_port(node.address.port, timeout_s, node.proc)
        wait_for_brokers(self.bootstrap_servers, len(self.nodes), timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to every node at once (the last ones cannot finish a controlled shutdown once the
        quorum is gone), SIGKILL to what is left after `timeout_s`."""
        running = [n for n in self.nodes if n.alive()]
        for node in running:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.kill()

    def kill_all(self) -> None:
        """kill -9 of every node: the end of a test session, whose data nobody reads again."""
        for node in self.nodes:
            node.kill()

    def _spawn(self, node: KafkaNode) -> None:
        args = [*_java(self.libs, self.heap, self.workdir, self.jvm_opts), "kafka.Kafka",
                str(node.workdir / "server.properties")]
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(  # noqa: S603 - java and arguments built here
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=node.workdir,
                start_new_session=True,  # a process group of its own: kill() takes the whole JVM
            )


def _java(libs: Path, heap: str, workdir: Path, jvm_opts: Sequence[str] = LEAN_JVM_OPTS) -> list[str]:
    java = shutil.which("java") or "java"
    return [java, f"-Xmx{heap}", "-Xms64m", *jvm_opts,
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.yaml'}", "-cp", f"{libs}/*"]


def node_addresses(nodes: int) -> list[NodeAddress]:
    """Free loopback ports for `nodes` nodes (ids from 1): a client port and a controller port each."""
    return [NodeAddress(i, free_port(), free_port()) for i in range(1, nodes + 1)]


def start_cluster(workdir: Path, nodes: int = 3, *, heap: str = DEFAULT_HEAP, libs: Path | None = None,
                  extra: Mapping[str, str] | None = None, addresses: list[NodeAddress] | None = None,
                  jvm_opts: Sequence[str] = LEAN_JVM_OPTS, format_args: Sequence[str] = (),
                  timeout_s: float = 120.0) -> KafkaCluster:
    """Format and start `nodes` (1 or 3) combined nodes; ConfigError when they cannot start (see
    `unavailable_reason`), or do not all register within `timeout_s` (their logs are in `workdir`).

    `extra`: settings over `cluster_settings` and `TEST_TUNING` for every node; `addresses`: the
    ports to use (default: `node_addresses(nodes)`); `jvm_opts`: LEAN_JVM_OPTS or SCRIPT_JVM_OPTS;
    `format_args`: more arguments to `kafka-storage format` (e.g. `--add-scram` for SCRAM users)."""
    if nodes not in (1, 3):
        raise ConfigError(f"a cluster of 1 or 3 nodes, not {nodes}")
    libs = libs or kafka_libs()
    reason = unavailable_reason(libs)
    if reason:
        raise ConfigError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "log4j2.yaml").write_text(LOG4J2)
    began = time.monotonic()
    addresses = addresses or node_addresses(nodes)
    cluster = KafkaCluster(workdir, libs, heap, tuple(jvm_opts), cluster_id=_cluster_id())
    try:
        for address in addresses:
            node = KafkaNode(address, workdir / f"node-{address.node_id}")
            node.workdir.mkdir()
            settings = {**cluster_settings(address, addresses, str(node.workdir / "data")), **TEST_TUNING,
                        **(extra or {})}
            _write_properties(node.workdir / "server.properties", settings)
            cluster.nodes.append(node)
        format_storage(cluster, format_args)
        for node in cluster.nodes:
            cluster._spawn(node)
        for node in cluster.nodes:
            wait_for_port(node.address.port, timeout_s, node.proc)
        wait_for_brokers(cluster.bootstrap_servers, nodes, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    cluster.started_s = time.monotonic() - began
    return cluster


def _cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` prints it: a random UUID in URL-safe base64, no padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _write_properties(path: Path, settings: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))


def format_storage(cluster: KafkaCluster, format_args: Sequence[str] = ()) -> None:
    """`kafka-storage format` of every node's log dir with the cluster's id, the nodes in parallel.
    `--cluster-id=ID` in one argument: an id may begin with `-` (URL-safe base64)."""
    running = []
    for node in cluster.nodes:
        args = [*_java(cluster.libs, cluster.heap, cluster.workdir), "kafka.tools.StorageTool", "format",
                f"--cluster-id={cluster.cluster_id}", "--config", str(node.workdir / "server.properties"),
                *format_args]
        with (node.workdir / "format.log").open("wb") as log:
            running.append((node, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)))  # noqa: S603
    for node, proc in running:
        if proc.wait(timeout=120) != 0:
            tail = (node.workdir / "format.log").read_text()[-500:]
            raise ConfigError(f"formatting node {node.node_id} failed (exit {proc.returncode}): {tail}")


def wait_for_brokers(bootstrap_servers: str, count: int, timeout_s: float) -> None:
    """Until the cluster's metadata lists `count` brokers; ConfigError after `timeout_s`."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
        pool.submit(asyncio.run, _wait_for_brokers(bootstrap_servers, count, timeout_s)).result()


async def _wait_for_brokers(bootstrap_servers: str, count: int, timeout_s: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        try:
            await admin.start()
            seen = len((await admin.describe_cluster())["brokers"])
            if seen >= count:
                return
        except (KafkaError, OSError):
            pass
        finally:
            await admin.close()
        await asyncio.sleep(0.3)
    raise ConfigError(f"{seen} of {count} Apache Kafka brokers registered within {timeout_s:g}s")
