"""The benchmark suite runs end to end on a tiny input, section by section, so it cannot rot.

Each test runs `python -m bench.suite --tiny --only N` against the session's broker and Redis and
checks the JSON it wrote: every figure of the section is there, with a value per run, and the
table was printed. No figure's size is judged (timing assertions do not belong in tests; the
speed targets are reported by `make bench`, docs/performance.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue.embedded import EmbeddedStack
from fatigue.redis_cluster import unsupported

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

EXPECTED = {
    "1": ["ceiling: raw aiokafka getmany + JSON decode", "bare Faust agent, no work",
          "naive Faust agent, count per customer in a Table",
          "quixstreams: State-API count per customer (RocksDB, changelog)",
          "quixstreams: 30-day sliding-window count per customer (RocksDB, changelog)",
          "our scorer, 1 worker process", "our scorer, 2 worker processes",
          *([] if unsupported() else ["our scorer, 1 worker process, on a Redis Cluster (3 primaries, 3 replicas)"]),
          "scorer (1 worker): Redis commands per event",
          "scorer (2 workers): Redis commands per event", "state + decision view bytes per customer (section 1 data)"],
    "2": ["pure core: engine.apply_event", "Processor without I/O (memory store, same stored values)",
          "core compiled (mypyc), child process", "core pure Python (FATIGUE_PURE_CORE=1), child process"],
    "3": ["raw produce, batches of 100 (8 in flight, acks=all)", "POST /v1/events, batches of 100 (8 connections)",
          "POST /v1/events, 1 event per request, max (32 connections)", "POST 1 event at 100/s open loop: p99",
          "fatigue import, batches of 1,000", "POST /v1/events (1 event): Redis commands per event",
          "POST /v1/events (100 events): Redis commands per event"],
    "4": ["load generator ceiling (stub server, closed loop)", "FastAPI floor: one route, no I/O (closed loop)",
          "decision API, max rate (closed loop)",
          "decision API at 100/s open loop: p99", "decision API: Redis commands per request"],
    "5": ["event -> snapshot, idle: p99", "event -> webhook, idle: p99", "event -> snapshot under 100 events/s: p99",
          "event -> webhook under 100 events/s: p99"],
    "6": ["state + decision view bytes per customer (200 customers, 1 event each)", "scorer RSS after 200 customers",
          "scorer throughput on this data (200 customers, 1 event each)",
          "restart after kill -9 to caught up (200 customers, 50 new events)"],
}
MAY_BE_NAN = {"ceiling: raw aiokafka getmany + JSON decode"}
"""At tiny sizes the whole topic can arrive in one fetch: no rate to tell (reported as nan)."""


def run_section(stack: EmbeddedStack, section: str, results: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--tiny", "--only", section, "--bootstrap",
         stack.kafka_bootstrap_servers, "--redis-url", stack.redis_url, "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = results.glob("tiny-*.json")
    return json.loads(path.read_text()), done.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("section", sorted(EXPECTED))
def test_section_runs_end_to_end(stack: EmbeddedStack, tmp_path: Path, section: str) -> None:
    report, stdout = run_section(stack, section, tmp_path)
    figures = {f["name"]: f for f in report["figures"]}
    assert list(figures) == EXPECTED[section]
    for name, figure in figures.items():
        assert len(figure["runs"]) == len(figure["load"]) >= 1, name
        assert name in stdout, f"{name} missing from the table"
        if name not in MAY_BE_NAN:
            assert not math.isnan(figure["value"]) and figure["value"] > 0, (name, figure["value"])
    assert report["machine"]["cores"] and report["mode"] == "tiny"
    if section == "1":
        for name in ("our scorer, 1 worker process", "our scorer, 2 worker processes"):
            # the scorer's own batch histogram (fatigue_scorer_batch_records), read from its /metrics
            assert figures[name]["also"]["batch_records_mean"] >= 1, name
        # The scorer's Redis commands, not the bench's: its progress polls (an HGET per partition every 20 ms,
        # from the start: thousands against 600 events) are left out. The scorer commits a partition's batch
        # in one script call, a few commands per customer (tiny batches: well under one per event).
        commands = figures["scorer (1 worker): Redis commands per event"]
        assert commands["value"] < 1, commands["note"]
