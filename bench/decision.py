"""Benchmark of the pre-send decision as the API computes it: decode the stored decision view read
from Redis (services/stored_values.py, as the scorer writes it by default), then
`services.policy.decision.decide` under the default policy.

    python -m bench.decision [--customers 2000] [--runs 5]

Views come from the real core (customers with a few weeks of touches and responses).
Reports decisions/s on one core (median of the runs) and the median view size.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.views import decision_view, snapshot
from services.durations import DAY_MS, HOUR_MS
from services.policy.decision import decide
from services.policy.model import default_policy
from services.snapshots import parse_snapshot
from services.stored_values import ValueEncoder

NOW = 1_790_000_000_000
CHANNELS = ("email", "sms", "phone", "wecom")


def states(customers: int) -> list[CustomerState]:
    """Customers with 2 to 16 touches (half of them answered) over the last 4 weeks, and a stage."""
    rng = random.Random(3)
    policy = default_policy()
    out = []
    for n in range(customers):
        state = CustomerState(f"c{n}")
        engine.apply_profile(state, {"stage": rng.choice(["prospect", "customer", "loyal"])}, NOW, policy)
        for i in range(rng.randint(2, 16)):
            at = NOW - rng.randint(0, 28 * DAY_MS)
            channel = rng.choice(CHANNELS)
            engine.apply_event(state, ContactEvent(f"t{i}", "touch", state.customer_id, channel, at, kind="value"),
                               NOW, policy)
            if rng.random() < 0.5:
                engine.apply_event(state, ContactEvent(f"r{i}", "response", state.customer_id, channel,
                                                       at + HOUR_MS, kind=rng.choice(["open", "reply"])), NOW, policy)
        out.append(state)
    return out


def snapshots(customers: int) -> list[bytes]:
    """The customers' full snapshots (what GET /v1/customers/{id} computes), stored-value encoded."""
    encoder = ValueEncoder()
    return [encoder.encode(snapshot(state, NOW, default_policy())) for state in states(customers)]


def views(customers: int) -> list[bytes]:
    """The customers' decision views as the scorer stores them (services/stored_values.py, default format)."""
    encoder = ValueEncoder()
    return [encoder.encode(decision_view(state, NOW, default_policy())) for state in states(customers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raw = views(args.customers)
    policy = default_policy()
    rates: list[float] = []
    outcomes: dict[str, int] = {}
    for _ in range(args.runs):
        started = time.perf_counter()
        for i, text in enumerate(raw):
            result = decide(parse_snapshot(text), policy, CHANNELS[i % len(CHANNELS)], "promo", NOW)
            outcomes[result.decision] = outcomes.get(result.decision, 0) + 1
        rates.append(len(raw) / (time.perf_counter() - started))
    sizes = sorted(len(t) for t in raw)
    print(f"pre-send decision (stored snapshot decoded + decide), {len(raw):,} customers, {args.runs} runs")
    print(f"  decisions/s (one core): median {statistics.median(rates):,.0f}  min {min(rates):,.0f}  "
          f"max {max(rates):,.0f}  ->  {1e6 / statistics.median(rates):,.0f} us per decision")
    print(f"  snapshot bytes: median {statistics.median(sizes):,.0f}  max {sizes[-1]:,}")
    print(f"  outcomes: {dict(sorted(outcomes.items()))}")


if __name__ == "__main__":
    main()
