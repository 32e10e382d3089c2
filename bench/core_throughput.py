"""Benchmark of the pure core: events/s on one core and bytes of state per customer.

    python -m bench.core_throughput [--customers 100000] [--events 200000] [--runs 5]

Feeds a synthetic stream (touches and replies over 30 days, several channels) through
`engine.apply_event` with a simulated clock; reports the median of several runs and the JSON
size of the per-customer state as stored in Redis.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from services.durations import DAY_MS
from services.policy.model import default_policy

CHANNELS = ("email", "sms", "phone", "wecom", "meeting")
T0 = 1_790_000_000_000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    events = make_events(args.customers, args.events, seed=1)
    rates = []
    states: dict[str, CustomerState] = {}
    for _ in range(args.runs):
        elapsed, states = run_once(events)
        rates.append(len(events) / elapsed)
    sizes = sorted(len(json.dumps(s.to_json(), separators=(",", ":"))) for s in states.values())
    print(f"pure core, {len(events):,} events over {len(states):,} customers, {args.runs} runs")
    print(f"  events/s (one core): median {statistics.median(rates):,.0f}  "
          f"min {min(rates):,.0f}  max {max(rates):,.0f}")
    print(f"  state bytes per customer (JSON as stored): median {statistics.median(sizes):,.0f}  "
          f"p99 {sizes[int(len(sizes) * 0.99)]:,}  max {sizes[-1]:,}  total {sum(sizes) / 1e6:,.1f} MB")


if __name__ == "__main__":
    main()
