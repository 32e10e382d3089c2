from __future__ import annotations

import pytest

from services.kafka import topic_specs
from services.settings import CommonSettings


@pytest.mark.parametrize(("replication", "min_isr"), [(1, None), (3, "2")])
def test_topics_are_co_partitioned_and_durable_when_replicated(replication: int, min_isr: str | None) -> None:
    settings = CommonSettings.from_env({"FATIGUE_PARTITIONS": "12", "FATIGUE_REPLICATION_FACTOR": str(replication)})
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert set(specs) == {"fatigue.events.v1", "fatigue.profiles.v1", "fatigue.actions.v1", "fatigue.deadletter.v1",
                          "fatigue.intake.v1"}
    assert {spec.num_partitions for spec in specs.values()} == {12}
    assert specs["fatigue.profiles.v1"].topic_configs["cleanup.policy"] == "compact"
    assert {spec.topic_configs.get("min.insync.replicas") for spec in specs.values()} == {min_isr}
