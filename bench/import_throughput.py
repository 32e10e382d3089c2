"""Benchmark: `fatigue import` of a large JSONL history — events/s and peak RSS of the importer.

    python -m bench.import_throughput [--events 1000000] [--customers 50000] [--batch 1000]

Starts an embedded broker and Redis, writes a synthetic history file (touches and responses in
time order over the last 60 days), then runs `fatigue import` in a child process with its
progress bar on this terminal and reports the child's wall time, events/s and peak RSS
(getrusage of the child). Memory should not grow with the file: compare two sizes.
Everything runs on this machine, on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fatigue.embedded import start_stack


def write_history(path: Path, events: int, customers: int, id_prefix: str = "b") -> None:
    start = datetime.now(UTC) - timedelta(days=60)
    step_s = 60 * 24 * 3600 / events
    with path.open("w", encoding="utf-8") as handle:
        for i in range(events):
            at = (start + timedelta(seconds=i * step_s)).isoformat()
            response = i % 5 == 4
            event = {"event_id": f"{id_prefix}{i}", "type": "response" if response else "touch",
                     "customer_id": f"cust-{i % customers}", "channel": ("email", "sms", "phone")[i % 3],
                     "occurred_at": at, "kind": "open" if response else "promo"}
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")


def import_command(history: Path, workdir: Path, batch: int, progress: bool) -> list[str]:
    """The `fatigue import` command line of the benchmark: the import alone, `--alerts-wait 0` (no scorer
    runs beside it: waiting for one to process and settle the import would be timed as import time)."""
    return [sys.executable, "-m", "fatigue.cli", "import", str(history), "--batch", str(batch),
            "--checkpoint", str(workdir / "cp.json"), "--report", str(workdir / "report.csv"),
            "--alerts-wait", "0", *([] if progress else ["--no-progress"])]


def run_import(history: Path, workdir: Path, env: dict[str, str], batch: int,
               progress: bool = True) -> tuple[float, float]:
    """`fatigue import` of `history` in a child process: (wall seconds, that child's peak RSS in MiB)."""
    command = import_command(history, workdir, batch, progress)
    began = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=None if progress else subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the largest child's so far
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"fatigue import exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    stack = start_stack(workdir / "stack")
    try:
        history = workdir / "history.jsonl"
        began = time.monotonic()
        write_history(history, args.events, args.customers)
        print(f"wrote {args.events:,} events ({history.stat().st_size / 2**20:,.0f} MiB) in "
              f"{time.monotonic() - began:.1f} s")
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers, "REDIS_URL": stack.redis_url,
               "FATIGUE_TOPIC_PREFIX": "bench.", "FATIGUE_REDIS_PREFIX": "bench:"}
        try:
            elapsed, peak_mib = run_import(history, workdir, env, args.batch)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        print(f"import: {args.events:,} events in {elapsed:.1f} s = {args.events / elapsed:,.0f} events/s "
              f"(batch {args.batch}); peak RSS of the importer {peak_mib:,.0f} MiB")
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
