"""Benchmark of the pure core: events/s on one core, compiled and pure Python, and bytes of state per customer.

    python -m bench.core_throughput [--customers 100000] [--events 200000] [--runs 5]

Feeds a synthetic stream (touches and replies over 30 days, several channels) through
`engine.apply_event` with a simulated clock; reports the median of several runs and the JSON
size of the per-customer state as stored in Redis.

Both implementations of the core run on the same events, each in a child process and in turns (the
compiled one as the install built it, the other with `FATIGUE_PURE_CORE=1`: from the `.py` files),
so their ratio is taken within one run on the same machine load. `--replay FILE` is that child.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from scorer.core import engine
from scorer.core.implementation import PURE_ENV, is_compiled
from scorer.core.state import ContactEvent, CustomerState
from services.durations import DAY_MS
from services.policy.model import default_policy

CHANNELS = ("email", "sms", "phone", "wecom", "meeting")
T0 = 1_790_000_000_000
COMPILED, PURE = "compiled", "pure Python"


def make_events(customers: int, events: int, seed: int) -> list[ContactEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(events):
        at = T0 + int(i * 30 * DAY_MS / events)
        cid = f"c{rng.randrange(customers)}"
        if rng.random() < 0.7:
            out.append(ContactEvent(f"e{i}", "touch", cid, rng.choice(CHANNELS), at, kind="promo"))
        else:
            out.append(ContactEvent(f"e{i}", "response", cid, rng.choice(CHANNELS), at, kind="reply"))
    return out


def run_once(events: list[ContactEvent], now_ms: int | None = None) -> tuple[float, dict[str, CustomerState]]:
    """`engine.apply_event` over `events` on fresh states: (seconds, states). The clock reads each
    event's own time, or `now_ms` for all of them (bench/edge.py: the Processor's fixed clock)."""
    policy = default_policy()
    states: dict[str, CustomerState] = {}
    started = time.perf_counter()
    for event in events:
        state = states.get(event.customer_id)
        if state is None:
            state = states[event.customer_id] = CustomerState(event.customer_id)
        engine.apply_event(state, event, event.occurred_at_ms if now_ms is None else now_ms, policy)
    return time.perf_counter() - started, states


# ---- each implementation in a child process ----


def write_events(events: list[ContactEvent], path: Path) -> None:
    names = [f.name for f in fields(ContactEvent)]
    path.write_text(json.dumps([[getattr(e, n) for n in names] for e in events]), encoding="utf-8")


def read_events(path: Path) -> list[ContactEvent]:
    return [ContactEvent(*row) for row in json.loads(path.read_text(encoding="utf-8"))]


def replay(path: Path, now_ms: int | None, runs: int) -> dict[str, Any]:
    """The child: `run_once` over the events of `path`, `runs` times; rates and CPU per event."""
    events = read_events(path)
    rates, cpu_us = [], []
    for _ in range(runs):
        cpu = time.process_time()
        elapsed, _ = run_once(events, now_ms)
        cpu_us.append((time.process_time() - cpu) / len(events) * 1e6)
        rates.append(len(events) / elapsed)
    return {"compiled": is_compiled(engine), "rates": rates, "cpu_us_per_event": cpu_us}


def measure_in_child(path: Path, implementation: str, *, now_ms: int | None = None, runs: int = 1) -> dict[str, Any]:
    """Run the events written to `path` through the core in a child process: COMPILED (as installed)
    or PURE (`FATIGUE_PURE_CORE=1`). Raises if the child ran the other implementation."""
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    if implementation == PURE:
        env[PURE_ENV] = "1"
    command = [sys.executable, "-m", "bench.core_throughput", "--replay", str(path), "--runs", str(runs)]
    if now_ms is not None:
        command += ["--now-ms", str(now_ms)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if result["compiled"] != (implementation == COMPILED):
        raise RuntimeError(f"asked for the {implementation} core, the child ran the other one: "
                           f"{done.stderr.strip()[-300:] or 'is the core compiled? make build-core'}")
    return result


def compare(events: list[ContactEvent], runs: int) -> dict[str, list[float]]:
    """Rates of both implementations on `events`, one run each per round, in alternating order."""
    rates: dict[str, list[float]] = {COMPILED: [], PURE: []}
    with tempfile.TemporaryDirectory(prefix="core-bench-") as tmp:
        path = Path(tmp) / "events.json"
        write_events(events, path)
        for n in range(runs):
            for implementation in (COMPILED, PURE) if n % 2 == 0 else (PURE, COMPILED):
                rates[implementation] += measure_in_child(path, implementation)["rates"]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replay", type=Path, help="(the child) events written by the parent")
    parser.add_argument("--now-ms", type=int, default=None, help="(the child) one clock for every event")
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(replay(args.replay, args.now_ms, args.runs)))
        return
    events = make_events(args.customers, args.events, seed=1)
    _, states = run_once(events)
    sizes = sorted(len(json.dumps(s.to_json(), separators=(",", ":"))) for s in states.values())
    rates = compare(events, args.runs)
    print(f"the core alone, {len(events):,} events over {len(states):,} customers, {args.runs} runs of each "
          "implementation in turns (child processes)")
    for implementation, found in rates.items():
        print(f"  {implementation + ':':<13} events/s (one core): median {statistics.median(found):,.0f}  "
              f"min {min(found):,.0f}  max {max(found):,.0f}")
    ratio = statistics.median(rates[COMPILED]) / statistics.median(rates[PURE])
    print(f"  compiled / pure Python: {ratio:.2f}x (target >= 2x)")
    print(f"  state bytes per customer (JSON as stored): median {statistics.median(sizes):,.0f}  "
          f"p99 {sizes[int(len(sizes) * 0.99)]:,}  max {sizes[-1]:,}  total {sum(sizes) / 1e6:,.1f} MB")


if __name__ == "__main__":
    main()
