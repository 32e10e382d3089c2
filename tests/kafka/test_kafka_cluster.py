"""fatigue/kafka_cluster.py itself: the settings it gives 1 and 3 nodes, why it cannot start, and
formatting with any cluster id `random-uuid` may print."""

from __future__ import annotations

from pathlib import Path

import pytest

from fatigue.kafka_cluster import (
    LOG4J2,
    KafkaCluster,
    KafkaNode,
    NodeAddress,
    cluster_settings,
    format_storage,
    kafka_libs,
    unavailable_reason,
)

NODES = [NodeAddress(i, 9000 + i, 9100 + i) for i in (1, 2, 3)]


@pytest.mark.parametrize(("voters", "replicas", "min_isr"), [(NODES[:1], "1", "1"), (NODES, "3", "2")])
def test_one_node_keeps_one_copy_three_nodes_three_with_two_in_sync(
    voters: list[NodeAddress], replicas: str, min_isr: str
) -> None:
    settings = cluster_settings(voters[0], voters, "/data")
    assert settings["default.replication.factor"] == settings["offsets.topic.replication.factor"] == replicas
    assert settings["min.insync.replicas"] == settings["transaction.state.log.min.isr"] == min_isr
    assert settings["controller.quorum.voters"].count("@") == len(voters)


def test_without_java_it_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no java on PATH" in (unavailable_reason() or "")


@pytest.mark.apache_kafka
def test_a_cluster_id_beginning_with_a_dash_is_formatted(tmp_path: Path) -> None:
    """URL-safe base64 ids may begin with `-`, which kafka-storage's argument parser once took for an option."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"Apache Kafka tier skipped: {reason}")
    (tmp_path / "log4j2.yaml").write_text(LOG4J2)
    node = KafkaNode(NODES[0], tmp_path / "node-1")
    node.workdir.mkdir()
    settings = cluster_settings(NODES[0], NODES[:1], str(node.workdir / "data"))
    (node.workdir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    cluster = KafkaCluster(tmp_path, kafka_libs(), "128m", nodes=[node], cluster_id="-AbCdEfGhIjKlMnOpQrStA")
    format_storage(cluster)
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStA" in (node.workdir / "data" / "meta.properties").read_text()
