"""docker-compose.yml and k8s/ say exactly what the Apache Kafka tier tested.

- The Compose file's Kafka services run the release the tier runs (deploy/kafka/pom.xml) with the
  broker settings of the tested cluster (`fatigue.kafka_cluster.cluster_settings`): combined
  broker+controller nodes, the static KRaft quorum, the listeners, the log in the mounted volume,
  replication factor 3, min.insync.replicas 2. Only addresses differ (service names in Compose,
  loopback ports in the tests). These need no Java: they run everywhere.
- The topics (`fatigue topics`: the Compose `topics` service and the k8s topics Job, with the
  replication factor both set) keep events for the longest window of the packaged policy plus its
  grace, compact profiles, and need two in-sync replicas; on the three-node cluster they are made so.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from fatigue.kafka_cluster import TEST_TUNING, NodeAddress, cluster_settings, kafka_version
from services.kafka import topic_specs
from services.policy.model import default_policy
from services.settings import CommonSettings
from tests.kafka.helpers import partitions_of, topic_configs

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
KAFKA_IMAGE = "apache/kafka"
NODES = [NodeAddress(i, 9092, 9093) for i in (1, 2, 3)]


def compose_kafka() -> dict[str, dict[str, Any]]:
    """The Compose services that run Apache Kafka, by name."""
    return {name: s for name, s in COMPOSE["services"].items() if str(s.get("image", "")).startswith(KAFKA_IMAGE)}


def broker_properties(environment: dict[str, Any]) -> dict[str, str]:
    """The server.properties the apache/kafka image makes of KAFKA_* variables (KAFKA_LOG_DIRS ->
    log.dirs; the image's documented mapping, with no `__`/`___` escapes needed here)."""
    return {name.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
            for name, value in environment.items() if name.startswith("KAFKA_") and name != "KAFKA_HEAP_OPTS"}


def listener_names(listeners: str) -> list[str]:
    return [entry.split("://")[0] for entry in listeners.split(",")]


def fatigue_env() -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["x-fatigue-env"].items()}


def test_compose_runs_the_release_the_tests_run() -> None:
    images = {s["image"] for s in compose_kafka().values()}
    assert images == {f"{KAFKA_IMAGE}:{kafka_version()}"}
    assert len(compose_kafka()) == len(NODES)


def test_compose_brokers_carry_the_tested_cluster_settings() -> None:
    for name, service in compose_kafka().items():
        props = broker_properties(service["environment"])
        node = next(n for n in NODES if str(n.node_id) == props.get("node.id"))
        tested = cluster_settings(node, NODES, "/data")
        assert set(props) == set(tested), f"{name}: settings only in Compose {sorted(set(props) - set(tested))}, " \
                                          f"only in the tests {sorted(set(tested) - set(props))}"
        by_address = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
        for key in set(tested) - by_address:
            assert props[key] == tested[key], (name, key)
        assert listener_names(props["listeners"]) == listener_names(tested["listeners"]), name
        assert listener_names(props["advertised.listeners"]) == ["PLAINTEXT"], name
        voters = [v.split("@")[0] for v in props["controller.quorum.voters"].split(",")]
        assert voters == [str(n.node_id) for n in NODES] and props["controller.quorum.voters"].count(":9093") == 3
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        assert props["log.dirs"] in mounts, f"{name}: the log ({props['log.dirs']}) is not in a volume: {mounts}"
        assert set(TEST_TUNING).isdisjoint(props), "a test-only tuning in Compose"


def test_compose_nodes_are_one_cluster_with_their_own_volumes() -> None:
    services = compose_kafka()
    [cluster_id] = {s["environment"]["CLUSTER_ID"] for s in services.values()}
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "not a Kafka cluster id (16 bytes, base64)"
    volumes = [s["volumes"][0].split(":")[0] for s in services.values()]
    assert len(set(volumes)) == len(volumes) and set(volumes) <= set(COMPOSE["volumes"])
    advertised = {broker_properties(s["environment"])["advertised.listeners"] for s in services.values()}
    bootstrap = fatigue_env()["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert {f"PLAINTEXT://{b}" for b in bootstrap} == advertised


def test_compose_and_k8s_make_topics_as_tested() -> None:
    k8s = yaml.safe_load((REPO / "k8s" / "configmap.yaml").read_text())["data"]
    for env in (fatigue_env(), k8s):
        assert env["FATIGUE_REPLICATION_FACTOR"] == "3"
        assert env["FATIGUE_KAFKA_IDEMPOTENCE"] == "true"
    specs = {spec.name: spec for spec in topic_specs(CommonSettings(replication_factor=3))}
    settings = CommonSettings()
    policy = default_policy()
    assert int(specs[settings.events_topic].topic_configs["retention.ms"]) >= policy.retention_ms + policy.grace_ms
    assert specs[settings.profiles_topic].topic_configs["cleanup.policy"] == "compact"
    assert all(spec.topic_configs["min.insync.replicas"] == "2" for spec in specs.values())


@pytest.mark.apache_kafka
async def test_topics_made_on_apache_kafka_have_those_settings(kafka_settings: CommonSettings) -> None:
    settings = kafka_settings
    topics = [settings.events_topic, settings.profiles_topic, settings.actions_topic, settings.dead_letter_topic,
              settings.intake_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        configs = await topic_configs(admin, topics)
        replicas = {t["topic"]: {len(p["replicas"]) for p in t["partitions"]}
                    for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()
    policy = default_policy()
    assert int(configs[settings.events_topic]["retention.ms"]) >= policy.retention_ms + policy.grace_ms
    assert configs[settings.profiles_topic]["cleanup.policy"] == "compact"
    assert {configs[t]["min.insync.replicas"] for t in topics} == {"2"}
    assert replicas == {topic: {3} for topic in topics}
    assert len(await partitions_of(settings.kafka_bootstrap_servers, settings.events_topic)) == settings.partitions
