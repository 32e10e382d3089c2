"""Benchmark of the scorer's record decoding: pydantic alone vs the msgspec fast path, µs per record.

    python -m bench.decode [--events 20000] [--rounds 7]

Decodes realistic topic values into what the scorer runs (scorer/envelopes.py): the events of the
suite's generator encoded exactly as the API publishes them (bench/dataset.py), the same events
with what upstream systems add (rep, campaign, a local offset, a few attributes), and profiles as
PUT /v1/customers/{id}/profile writes them. Each contender decodes the whole list once a round,
contenders interleaved round after round on one core; the median round of CPU time (the process's
own, so that other jobs on a shared machine inflate it less than wall time) is reported, with the
ratio. Both contenders' outputs are compared first: a benchmark of a wrong decoder is worthless.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from bench.dataset import Dataset
from scorer import envelopes as decoding
from services.contract import EventEnvelope, EventIn, ProfileEnvelope, ProfileIn, Stage, Tier, encode
from services.contract_fast import EventEnvelopeFast, fast_event

Decoder = Callable[[Sequence[bytes | None]], list[Any]]


def pydantic_events(values: Sequence[bytes | None]) -> list[Any]:
    """The reference: every record through pydantic (what the scorer did before the fast path)."""
    return [decoding._event_by_pydantic(value) for value in values]


def pydantic_profiles(values: Sequence[bytes | None]) -> list[Any]:
    return [decoding._profile_by_pydantic(value) for value in values]


def plain_events(events: int) -> list[bytes]:
    """The suite's events as the API publishes them (touches and responses with a kind, no extras)."""
    return [value for _, _, value in Dataset.make(events, max(1, events // 10), 6).records]


def rich_events(events: int, seed: int = 2) -> list[bytes]:
    """Events with every optional field in use: rep, campaign, a +08:00 offset, 3-6 attributes."""
    rng = random.Random(seed)
    received = datetime.now(UTC)
    shanghai = received.astimezone(UTC).replace(tzinfo=None)
    out = []
    for i in range(events):
        touch = rng.random() < 0.7
        body: dict[str, Any] = {
            "event_id": f"crm-{i:08d}", "type": "touch" if touch else "response",
            "customer_id": f"cust-{rng.randrange(10_000)}", "channel": rng.choice(("email", "sms", "wecom")),
            "occurred_at": (shanghai - timedelta(minutes=i)).isoformat(timespec="milliseconds") + "+08:00",
            "kind": rng.choice(("promo", "value")) if touch else rng.choice(("open", "reply")),
            "rep_id": f"rep-{rng.randrange(50)}", "campaign_id": f"spring-{rng.randrange(5)}",
            "attributes": {"template": f"t{rng.randrange(30)}", "locale": "zh-CN", "score": rng.random(),
                           "tags": ["vip", "north"][: rng.randrange(3)], "attempt": rng.randrange(5)},
        }
        event = EventIn.model_validate(body)
        out.append(encode(EventEnvelope(producer="crm", received_at=received, event=event)))
    return out


def profiles(count: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        profile = ProfileIn(tier=rng.choice(list(Tier)), stage=rng.choice((Stage.LEAD, Stage.CUSTOMER, Stage.LOYAL)),
                            timezone=rng.choice(("Asia/Shanghai", "Europe/Berlin", "America/New_York")),
                            owner_rep_id=f"rep-{rng.randrange(50)}", do_not_contact=rng.random() < 0.05)
        out.append(encode(ProfileEnvelope(customer_id=f"cust-{i}", updated_at=now, profile=profile)))
    return out


def interleaved(values: list[bytes], contenders: dict[str, Decoder], rounds: int) -> dict[str, float]:
    """Median CPU µs per record of each contender, over `rounds` interleaved rounds."""
    first = [contender(values) for contender in contenders.values()]
    assert all(result == first[0] for result in first), "the contenders decode differently"
    assert not any(isinstance(r, decoding.Undecodable) for r in first[0]), "the benchmark's records must be valid"
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            started = time.process_time()
            contender(values)
            timings[name].append((time.process_time() - started) / len(values) * 1e6)
    return {name: statistics.median(runs) for name, runs in timings.items()}


def breakdown(values: list[bytes], rounds: int) -> dict[str, float]:
    """Where the fast path's time goes (events): msgspec alone (parse and validate in C), then with the
    checks done in Python (`fast_event`), then everything (the ContactEvent and result built)."""
    parse = msgspec.json.Decoder(EventEnvelopeFast).decode
    stages: dict[str, Decoder] = {
        "msgspec": lambda vs: [parse(v) for v in vs if v is not None],
        "checks": lambda vs: [fast_event(v) for v in vs if v is not None],
        "all": decoding.decode_events,
    }
    timings: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, stage in stages.items():
            started = time.process_time()
            stage(values)
            timings[name].append((time.process_time() - started) / len(values) * 1e6)
    return {name: statistics.median(runs) for name, runs in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    cases: list[tuple[str, list[bytes], dict[str, Decoder]]] = [
        ("events as the API writes them", plain_events(args.events),
         {"pydantic": pydantic_events, "fast": decoding.decode_events}),
        ("events with rep, campaign, offset, attributes", rich_events(args.events),
         {"pydantic": pydantic_events, "fast": decoding.decode_events}),
        ("profiles", profiles(args.events), {"pydantic": pydantic_profiles, "fast": decoding.decode_profiles}),
    ]
    print(f"decoding into what the scorer runs, {args.events:,} records a case, median of {args.rounds} "
          "interleaved rounds, CPU µs per record")
    for title, values, contenders in cases:
        median = interleaved(values, contenders, args.rounds)
        size = statistics.median(len(v) for v in values)
        print(f"  {title} ({size:.0f} bytes): pydantic {median['pydantic']:.2f}  fast {median['fast']:.2f}  "
              f"({median['pydantic'] / median['fast']:.1f}x)")
    stages = breakdown(cases[0][1], args.rounds)
    print(f"  fast path of the first case: msgspec parse + C validation {stages['msgspec']:.2f}, "
          f"+ Python checks (moments, kinds) {stages['checks'] - stages['msgspec']:.2f}, "
          f"+ ContactEvent and result {stages['all'] - stages['checks']:.2f}")


if __name__ == "__main__":
    main()
