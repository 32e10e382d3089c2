"""deploy/fetch-kafka.sh: pinned, verified, cached — without reaching Maven Central in the test.

The jars fetched by `bootstrap.sh --dev` are the input: a second run must accept them from the cache
with Maven not even on PATH, and a cached jar that differs from deploy/kafka/artifacts.sha256 must
be refused (the script then wants Maven to fetch them again, which is not on PATH here: no network).
Skipped, saying why, where the jars were not fetched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fatigue.kafka_cluster import kafka_libs, kafka_version

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "fetch-kafka.sh"
TOOLS = ("bash", "sed", "sha256sum", "sort", "grep", "diff", "head", "tail", "mkdir", "mktemp", "date", "rm", "mv",
         "ls", "wc", "dirname", "tr", "cat")


@pytest.fixture
def without_maven(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has the shell tools the script uses and neither mvn nor java."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return {**os.environ, "PATH": str(bin_dir)}


@pytest.fixture
def fetched() -> Path:
    libs = kafka_libs()
    if not (libs / ".complete").exists():
        pytest.skip(f"Apache Kafka jars not fetched into {libs} (bash deploy/fetch-kafka.sh)")
    return libs


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_pin_names_one_release() -> None:
    lock = (REPO / "deploy" / "kafka" / "artifacts.sha256").read_text()
    assert f"kafka_2.13-{kafka_version()}.jar" in lock and f"Apache Kafka {kafka_version()}" in lock
    assert f"kafka-clients-{kafka_version()}.jar" in lock


def test_a_second_fetch_uses_the_cache_without_maven(fetched: Path, without_maven: dict[str, str]) -> None:
    done = run(without_maven)
    assert done.returncode == 0, done.stderr
    assert f"Apache Kafka {kafka_version()} cached in {fetched}" in done.stdout


def test_a_cached_jar_that_differs_from_the_pin_is_refused(
    fetched: Path, without_maven: dict[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    libs = cache / kafka_version() / "libs"
    shutil.copytree(fetched, libs)
    with (libs / f"kafka-clients-{kafka_version()}.jar").open("ab") as jar:
        jar.write(b"tampered")
    env = {**without_maven, "FATIGUE_KAFKA_CACHE": str(cache)}
    assert run(env, "--print-dir").stdout.strip() == str(libs)
    done = run(env)
    assert done.returncode == 1 and "cached" not in done.stdout
    assert "no mvn" in done.stderr  # it would fetch the pinned jars again
