"""Benchmark of `fatigue backtest`'s replay: wall time, events/s and timers fired.

    python -m bench.backtest [--customers 12000] [--runs 3] [--profile]

Replays the synthetic history of `fatigue demo` (fatigue/demo_data.py: four personas, ~8 events
per customer over 60 days, untimed profiles) through `scorer.backtest.simulate` with the packaged
default policy, up to 30 days after the last event (so the re_engage timers fire too). Reports each
run and the median, for the optimised replay (timers due only when a rule's outcome can change)
and, with `--every-timer`, for the reference that fires every live timer (as the live scorer
does), checking both emit the same actions. `--profile` prints the top of a cProfile of one run.
Loading and validating the files is not timed (the replay only).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from datetime import UTC, datetime

from fatigue.demo_data import generate
from scorer.backtest import ProfileChange, Simulation, simulate
from scorer.core.state import ContactEvent
from scorer.history import contact_event
from services.contract import EventIn
from services.durations import DAY_MS
from services.policy.model import Policy, default_policy

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def make_history(customers: int, seed: int) -> tuple[list[ContactEvent], list[ProfileChange]]:
    people, bodies = generate(customers, seed, NOW)
    events = [contact_event(EventIn.model_validate(body), "bench") for body in bodies]
    profiles = [ProfileChange(p.customer_id, p.profile) for p in people]
    return events, profiles


def run_once(events: list[ContactEvent], profiles: list[ProfileChange], policy: Policy, until_ms: int,
             every_timer: bool) -> tuple[float, Simulation]:
    started = time.perf_counter()
    sim = simulate(events, profiles, policy, until_ms=until_ms, every_timer=every_timer)
    return time.perf_counter() - started, sim


def _line(label: str, times: list[float], events: int, sim: Simulation) -> str:
    runs = "  ".join(f"{t:.2f}" for t in times)
    median = statistics.median(times)
    return (f"  {label:<12} wall s: median {median:.2f} (runs {runs})  events/s {events / median:,.0f}  "
            f"timers fired {sim.timers_fired:,}  actions {len(sim.actions):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=12_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--every-timer", action="store_true", help="also time the reference that fires every timer")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one optimised run")
    args = parser.parse_args()
    policy = default_policy()
    events, profiles = make_history(args.customers, args.seed)
    until_ms = max(e.occurred_at_ms for e in events) + 30 * DAY_MS
    span_days = (until_ms - min(e.occurred_at_ms for e in events)) / DAY_MS
    print(f"backtest replay, {len(events):,} events of {len(profiles):,} customers over {span_days:.0f} days, "
          f"default policy, {args.runs} runs")
    modes = [("every timer", True)] if args.every_timer else []
    results: dict[str, Simulation] = {}
    for label, every in [*modes, ("rules due", False)]:
        times = []
        for _ in range(args.runs):
            elapsed, sim = run_once(events, profiles, policy, until_ms, every)
            times.append(elapsed)
        results[label] = sim
        print(_line(label, times, len(events), sim))
    if "every timer" in results:
        same = results["every timer"].actions == results["rules due"].actions
        print(f"  same actions (types, customers, times, reasons, ids): {'yes' if same else 'NO'}")
        if not same:
            raise SystemExit(1)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        simulate(events, profiles, policy, until_ms=until_ms)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
