"""The benchmark's section 1k (section 1 on Apache Kafka) runs end to end on a tiny input, on the
session's cluster (`--apache-kafka`), so it cannot rot. No figure's size is judged (as in
tests/bench/test_suite_smoke.py, whose section 1 names these figures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue.embedded import EmbeddedStack
from fatigue.kafka_cluster import KafkaCluster, kafka_version
from tests.bench.test_suite_smoke import EXPECTED, MAY_BE_NAN

pytestmark = pytest.mark.apache_kafka

REPO = Path(__file__).resolve().parents[2]
STREAM_FIGURES = [name for name in EXPECTED["1"][:7] if not name.startswith("quixstreams")]
"""Section 1's Faust peers and scorer runs (its quixstreams peers, Cluster run, Redis and size figures
are section 1's alone)."""


@pytest.mark.timeout(300)
def test_section_1k_runs_section_1s_contenders_on_apache_kafka(
    stack: EmbeddedStack, kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--tiny", "--only", "1k", "--bootstrap", stack.kafka_bootstrap_servers,
         "--redis-url", stack.redis_url, "--apache-kafka", kafka_cluster.bootstrap_servers, "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("tiny-*.json")
    report = json.loads(path.read_text())
    assert [f["name"] for f in report["figures"]] == STREAM_FIGURES
    for figure in report["figures"]:
        assert figure["section"] == f"1k stream, Apache Kafka {kafka_version()}"
        assert figure["name"] in done.stdout
        if figure["name"] not in MAY_BE_NAN:
            assert not math.isnan(figure["value"]) and figure["value"] > 0, figure
